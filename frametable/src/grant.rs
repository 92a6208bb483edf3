//! The frame table behind hvmem-grant's frame references (feature `grant`).
//!
//! [`TableGrantFrames`] implements [`hvmem_grant::GrantFrames`] over a
//! [`FrameTable`]: a read-only grant mapping holds a
//! general reference ([`get_page`](crate::FrameTable::get_page)) taken in
//! the granter's name, a writable one a general and a
//! [`FrameType::Writable`] type reference (Xen
//! `get_page_and_type(PGT_writable_page)`), so a frame another domain maps
//! writable can never become a page table meanwhile. Transfers move frames
//! with [`transfer`](crate::FrameTable::transfer) (sender to host, host to
//! receiver) and free an undeliverable one with
//! [`release`](crate::FrameTable::release).
//!
//! What the frame table does not know, the embedder supplies through
//! [`GrantHost`]: each domain's physmap (guest frame to machine frame),
//! whether a domain may receive another frame, and frame contents for copy.
//!
//! # Example
//!
//! ```
//! use hvmem_frametable::grant::{GrantHost, TableGrantFrames};
//! use hvmem_frametable::{FrameInfo, FrameTable, FrameType, Owner};
//! use hvmem_grant::GrantFrames;
//! use hvmem_types::{DomId, FrameRange, Mfn};
//!
//! /// A PV host: frame numbers are machine frame numbers.
//! struct Pv;
//! impl GrantHost for Pv {
//!     fn translate(&self, _: DomId, gfn: u64) -> Option<Mfn> { Some(Mfn::new(gfn)) }
//!     fn remove_from_physmap(&self, _: DomId, _: u64) {}
//!     fn add_to_physmap(&self, _: DomId, _: u64, _: Mfn) -> bool { true }
//!     fn can_receive(&self, _: DomId) -> bool { true }
//!     fn copy(&self, _: Mfn, _: usize, _: Mfn, _: usize, _: usize) {}
//! }
//!
//! let frames: [FrameInfo; 4] = Default::default();
//! let table = FrameTable::new(&frames, &[FrameRange::new(Mfn::new(0x10), 4).unwrap()])?;
//! let granter = DomId::new(1);
//! table.assign(Mfn::new(0x11), Owner::Domain(granter))?;
//! let refs = TableGrantFrames::new(&table, Pv);
//!
//! // A writable grant mapping: a general and a writable type reference.
//! assert!(refs.get_page_and_type(granter, Mfn::new(0x11)));
//! let state = table.state(Mfn::new(0x11))?;
//! assert_eq!((state.refs, state.type_refs, state.frame_type), (2, 1, FrameType::Writable));
//! refs.put_page_and_type(Mfn::new(0x11));
//! assert_eq!(table.state(Mfn::new(0x11))?.refs, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use hvmem_grant::{GfnError, GrantFrames, StealError};
use hvmem_types::{DomId, Mfn};

use crate::{FrameError, FrameTable, FrameType, Owner, TrustContents};

/// What the grant glue needs besides the frame table.
pub trait GrantHost {
    /// The machine frame at `dom`'s frame number `gfn` (identity for a PV
    /// guest, its p2m for a translated one), or `None` if there is none.
    fn translate(&self, dom: DomId, gfn: u64) -> Option<Mfn>;

    /// Removes `gfn` from `dom`'s physmap (its frame was transferred away).
    fn remove_from_physmap(&self, dom: DomId, gfn: u64);

    /// Adds `mfn` at `gfn` to `dom`'s physmap; `false` if it cannot.
    fn add_to_physmap(&self, dom: DomId, gfn: u64, mfn: Mfn) -> bool;

    /// Whether `dom` may receive one more frame (not dying, below its
    /// maximum).
    fn can_receive(&self, dom: DomId) -> bool;

    /// Copies `len` bytes between frames (hvmem-grant has checked both
    /// ranges lie inside their frames, and holds references on both).
    fn copy(&self, src: Mfn, src_offset: usize, dst: Mfn, dst_offset: usize, len: usize);
}

/// [`GrantFrames`] over a [`FrameTable`] and a [`GrantHost`].
#[derive(Debug)]
pub struct TableGrantFrames<'t, H> {
    table: &'t FrameTable<'t>,
    host: H,
}

impl<'t, H: GrantHost> TableGrantFrames<'t, H> {
    /// The glue over `table`, asking `host` for physmaps and memory.
    pub fn new(table: &'t FrameTable<'t>, host: H) -> Self {
        Self { table, host }
    }

    /// The host part.
    pub fn host(&self) -> &H {
        &self.host
    }
}

impl<H: GrantHost> GrantFrames for TableGrantFrames<'_, H> {
    fn get_gfn(&self, owner: DomId, gfn: u64) -> Result<Mfn, GfnError> {
        let mfn = self.host.translate(owner, gfn).ok_or(GfnError::BadPage)?;
        self.table
            .get_page(mfn, Owner::Domain(owner))
            .map_err(|_| GfnError::BadPage)?;
        Ok(mfn)
    }

    fn get_page(&self, owner: DomId, mfn: Mfn) -> bool {
        self.table.get_page(mfn, Owner::Domain(owner)).is_ok()
    }

    fn put_page(&self, mfn: Mfn) {
        let dropped = self.table.put_page(mfn);
        debug_assert!(dropped.is_ok(), "grant put of {mfn} without a reference");
    }

    fn get_page_and_type(&self, owner: DomId, mfn: Mfn) -> bool {
        self.table
            .get_typed_ref(
                mfn,
                Owner::Domain(owner),
                FrameType::Writable,
                &TrustContents,
            )
            .map(|typed| {
                let _ = typed.into_raw();
            })
            .is_ok()
    }

    fn get_type(&self, _owner: DomId, mfn: Mfn) -> bool {
        // The caller's general reference (taken in the owner's name) keeps
        // the frame owned; the frame table checks that one is held.
        self.table
            .get_type(mfn, FrameType::Writable, &TrustContents)
            .is_ok()
    }

    fn put_page_and_type(&self, mfn: Mfn) {
        let typed = self.table.put_type(mfn, &TrustContents);
        let general = self.table.put_page(mfn);
        debug_assert!(
            typed.is_ok() && general.is_ok(),
            "grant put of {mfn} without its references"
        );
    }

    fn copy(&self, src: Mfn, src_offset: usize, dst: Mfn, dst_offset: usize, len: usize) {
        self.host.copy(src, src_offset, dst, dst_offset, len);
    }

    fn steal_page(&self, owner: DomId, gfn: u64) -> Result<Mfn, StealError> {
        let mfn = self.host.translate(owner, gfn).ok_or(StealError::BadPage)?;
        match self.table.transfer(mfn, Owner::Domain(owner), Owner::Host) {
            Ok(()) => {
                self.host.remove_from_physmap(owner, gfn);
                Ok(mfn)
            }
            Err(FrameError::InUse { .. }) => Err(StealError::InUse),
            Err(_) => Err(StealError::BadPage),
        }
    }

    fn can_receive(&self, dom: DomId) -> bool {
        self.host.can_receive(dom)
    }

    fn assign_page(&self, dom: DomId, mfn: Mfn, gfn: u64) -> bool {
        if self
            .table
            .transfer(mfn, Owner::Host, Owner::Domain(dom))
            .is_err()
        {
            return false;
        }
        if self.host.add_to_physmap(dom, gfn, mfn) {
            return true;
        }
        // Back to the host: nobody else can have referenced it meanwhile.
        let back = self.table.transfer(mfn, Owner::Domain(dom), Owner::Host);
        debug_assert!(back.is_ok(), "transferred {mfn} gained a user");
        false
    }

    fn free_page(&self, mfn: Mfn) {
        let released = self.table.release(mfn, Owner::Host);
        debug_assert!(released.is_ok(), "freeing {mfn} that was not stolen");
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use core::sync::atomic::{AtomicU16, AtomicU32};
    use std::vec::Vec;

    use hvmem_grant::{
        ActiveEntry, Domains, GntMapFlags, GntSt, GnttabMapGrantRef, GnttabTransfer,
        GnttabUnmapGrantRef, GrantRef, GrantTable, GrantTableConfig, GrantVersion, GuestGrantTable,
        Maptrack, MaptrackEntry, SliceMemory, TransferEnd,
    };
    use hvmem_types::{FrameRange, Gfn};

    use super::*;
    use crate::FrameInfo;

    const GRANTER: DomId = DomId::new(1);
    const MAPPER: DomId = DomId::new(2);

    /// PV: frame numbers are machine frames.
    struct Pv;

    impl GrantHost for Pv {
        fn translate(&self, _: DomId, gfn: u64) -> Option<Mfn> {
            Some(Mfn::new(gfn))
        }
        fn remove_from_physmap(&self, _: DomId, _: u64) {}
        fn add_to_physmap(&self, _: DomId, _: u64, _: Mfn) -> bool {
            true
        }
        fn can_receive(&self, _: DomId) -> bool {
            true
        }
        fn copy(&self, _: Mfn, _: usize, _: Mfn, _: usize, _: usize) {}
    }

    struct One<'t>(&'t GrantTable<'t>);

    impl Domains for One<'_> {
        fn grant_table(&self, dom: DomId) -> Option<&GrantTable<'_>> {
            (dom == self.0.owner()).then_some(self.0)
        }
    }

    /// (general refs, type refs, type)
    fn counts(table: &FrameTable<'_>, mfn: u64) -> (u64, u64, FrameType) {
        let state = table.state(Mfn::new(mfn)).unwrap();
        (state.refs, state.type_refs, state.frame_type)
    }

    /// (general refs, type refs)
    fn refs_of(table: &FrameTable<'_>, mfn: u64) -> (u64, u64) {
        let (refs, type_refs, _) = counts(table, mfn);
        (refs, type_refs)
    }

    #[test]
    fn grant_mappings_take_writable_type_or_general_references_and_drop_them_once() {
        let infos: [FrameInfo; 8] = Default::default();
        let table =
            FrameTable::new(&infos, &[FrameRange::new(Mfn::new(0x10), 8).unwrap()]).unwrap();
        for mfn in 0x10..0x14 {
            table.assign(Mfn::new(mfn), Owner::Domain(GRANTER)).unwrap();
        }
        let refs = TableGrantFrames::new(&table, Pv);
        let words: Vec<AtomicU32> = (0..1024).map(|_| AtomicU32::new(0)).collect();
        let status: Vec<AtomicU16> = Vec::new();
        let mem = SliceMemory::new(&words, &status, 0, 0);
        let active: Vec<ActiveEntry> = (0..512).map(|_| ActiveEntry::new()).collect();
        let grants = GrantTable::new(GRANTER, &mem, &active, GrantTableConfig::DEFAULT).unwrap();
        let guest = GuestGrantTable::new(&mem, GrantVersion::V1, 1);
        guest
            .grant_access(GrantRef(8), MAPPER, Gfn::new(0x11), false)
            .unwrap();
        guest
            .grant_access(GrantRef(9), MAPPER, Gfn::new(0x12), true)
            .unwrap();
        let storage: Vec<MaptrackEntry> = (0..4).map(|_| MaptrackEntry::new()).collect();
        let maptrack = Maptrack::new(MAPPER, false, &storage, 4);
        let domains = One(&grants);
        let mut ops = [
            (8, GntMapFlags::HOST_MAP),
            (9, GntMapFlags::HOST_MAP | GntMapFlags::READONLY),
        ]
        .map(|(gref, flags)| GnttabMapGrantRef {
            host_addr: 0x1000,
            flags: flags.bits(),
            gref,
            dom: GRANTER.get(),
            ..Default::default()
        });
        maptrack.map_grant_refs(&domains, &refs, &mut ops);
        assert_eq!([ops[0].status, ops[1].status], [GntSt::Okay.raw(); 2]);
        // Allocation + mapping (whose general reference is the one the
        // first pin's translation took); the writable one typed.
        assert_eq!(counts(&table, 0x11), (2, 1, FrameType::Writable));
        assert_eq!(refs_of(&table, 0x12), (2, 0));
        // The writably mapped frame cannot become a page table.
        assert!(matches!(
            table.get_typed_ref(
                Mfn::new(0x11),
                Owner::Domain(GRANTER),
                FrameType::L1,
                &TrustContents
            ),
            Err(FrameError::TypeConflict { .. })
        ));
        let mut unmaps = ops.map(|op| GnttabUnmapGrantRef {
            host_addr: 0x1000,
            handle: op.handle,
            ..Default::default()
        });
        maptrack.unmap_grant_refs(&domains, &refs, &mut unmaps, &mut || {});
        assert_eq!(refs_of(&table, 0x11), (1, 0));
        assert_eq!(refs_of(&table, 0x12), (1, 0));
    }

    #[test]
    fn transfer_moves_the_frame_through_the_host_to_the_receiver() {
        let infos: [FrameInfo; 8] = Default::default();
        let table =
            FrameTable::new(&infos, &[FrameRange::new(Mfn::new(0x10), 8).unwrap()]).unwrap();
        table.assign(Mfn::new(0x15), Owner::Domain(MAPPER)).unwrap();
        table.assign(Mfn::new(0x16), Owner::Domain(MAPPER)).unwrap();
        let refs = TableGrantFrames::new(&table, Pv);
        let words: Vec<AtomicU32> = (0..1024).map(|_| AtomicU32::new(0)).collect();
        let mem = SliceMemory::new(&words, &[], 0, 0);
        let active: Vec<ActiveEntry> = (0..512).map(|_| ActiveEntry::new()).collect();
        let receiver = GrantTable::new(GRANTER, &mem, &active, GrantTableConfig::DEFAULT).unwrap();
        let guest = GuestGrantTable::new(&mem, GrantVersion::V1, 1);
        guest
            .grant_transfer(GrantRef(8), MAPPER, Gfn::new(0x40))
            .unwrap();
        let mut ops = [0x15, 0x16].map(|gfn| GnttabTransfer {
            mfn: gfn,
            domid: GRANTER.get(),
            gref: 8,
            ..Default::default()
        });
        hvmem_grant::transfer(MAPPER, &One(&receiver), &refs, &mut ops);
        assert_eq!(ops[0].status, GntSt::Okay.raw());
        assert_eq!(
            table.state(Mfn::new(0x15)).unwrap().owner,
            Some(Owner::Domain(GRANTER))
        );
        assert_eq!(
            guest.end_transfer(GrantRef(8)),
            Ok(TransferEnd::Received(0x15))
        );
        // The second found the entry already used: its frame is freed.
        assert_eq!(ops[1].status, GntSt::GeneralError.raw());
        assert_eq!(table.state(Mfn::new(0x16)).unwrap().owner, None);
    }
}

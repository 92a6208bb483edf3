//! Split-driver I/O through grants: a backend domain serves block requests
//! of frontend domains, the way Xen's blkback and blkfront exchange pages.
//!
//! At start each frontend sets up its grant table (`setup_table`, one
//! frame), checks its size (`query_size`), and every other frontend
//! switches to grant table v2 (`set_version`). Each frontend keeps two
//! buffer pages out of its kernel's free pages. Every simulated second,
//! per frontend:
//!
//! 1. The write issued the second before completes: the backend reads the
//!    mapped page (it must still hold what the frontend wrote), unmaps it
//!    (`unmap_grant_ref`), and the frontend ends access to the grant, which
//!    must succeed now that nothing maps it.
//! 2. A write: the frontend fills its first buffer, grants it read-only to
//!    the backend, and the backend maps it (`map_grant_ref`, host mapping,
//!    read-only). The mapping stays until the next second, so the checker
//!    sees a live grant mapping at every step.
//! 3. A read: the backend fills its own buffer, the frontend grants its
//!    second buffer writable, the backend copies its buffer into the grant
//!    (`GNTTABOP_copy`, `GNTCOPY_dest_gref`), the frontend ends access and
//!    finds the backend's data in its buffer.
//!
//! 4. A packet received by page flipping, as netback and netfront did
//!    before grant copies: at setup the frontend gave back the frame of an
//!    rx slot (`decrease_reservation`) and offered the slot to the backend
//!    (an accept-transfer entry). The backend fills a page of its own with
//!    the packet and transfers the frame (`GNTTABOP_transfer`); the
//!    frontend collects it (`end_transfer`), finds the packet at its rx
//!    slot, gives the frame back and offers the slot again. The backend
//!    repopulates the guest frame it gave away (`populate_physmap`) before
//!    its next packet. A frame Xen could not deliver, or a backend the
//!    host has no memory for, is a dropped packet, as it was in Linux.
//!
//! Every other status must be `GNTST_okay` and every page must hold what
//! was written: anything else is a [`Violation`].

use hvmem_grant::{
    GntCopyFlags, GntMapFlags, GntSt, GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef,
    GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GnttabTransfer, GnttabUnmapGrantRef,
    GrantRef, TransferEnd,
};
use hvmem_types::{DomId, Gfn, Mfn};

use crate::abi::{XENMEM_DECREASE_RESERVATION, XENMEM_POPULATE_PHYSMAP};
use crate::grant::GrantArg;
use crate::guest::Guest;
use crate::host::Host;
use crate::hypercall::{Hypercall, MemoryArg, Reservation};
use crate::invariants::Violation;
use crate::rng::mix;

/// The grant reference of a frontend's write buffer (the first one a
/// frontend may use: 0..8 are the toolstack's).
const WRITE_REF: GrantRef = GrantRef(8);
/// The grant reference of a frontend's read buffer.
const READ_REF: GrantRef = GrantRef(9);
/// The grant reference of a frontend's rx slot (accept transfer).
const RX_REF: GrantRef = GrantRef(10);

/// `GNTTABOP_map_grant_ref`, `unmap_grant_ref`, `setup_table`, `copy`,
/// `query_size`, `set_version`.
const MAP: u32 = 0;
const UNMAP: u32 = 1;
const SETUP: u32 = 2;
const TRANSFER: u32 = 4;
const COPY: u32 = 5;
const QUERY: u32 = 6;
const SET_VERSION: u32 = 8;

/// What the split drivers did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Block writes (frontend page mapped by the backend).
    pub writes: u64,
    /// Block reads (backend data copied into a frontend grant).
    pub reads: u64,
    /// Packets received by page flipping (a frame transferred from the
    /// backend to a frontend).
    pub flips: u64,
    /// Packets dropped: the frame could not be delivered, or the backend
    /// had no frame to send.
    pub flips_dropped: u64,
    /// `grant_table_op` and `memory_op` hypercalls issued.
    pub hypercalls: u64,
}

#[derive(Debug)]
struct Frontend {
    dom: DomId,
    write_buf: Gfn,
    read_buf: Gfn,
    /// The guest frame transferred packets arrive at (empty while it
    /// waits for one).
    rx_slot: Gfn,
    /// The write in flight: backend handle, host address, frame and data.
    inflight: Option<(u32, u64, Mfn, u64)>,
}

/// A backend and its frontends.
#[derive(Debug)]
pub struct SplitIo {
    backend: DomId,
    backend_buf: Gfn,
    /// The backend's guest frame it flips packets from.
    flip_buf: Gfn,
    frontends: Vec<Frontend>,
    serial: u64,
    /// What they did.
    pub stats: IoStats,
}

fn grant_call(host: &mut Host<'_>, dom: DomId, cmd: u32, arg: GrantArg<'_>) -> i64 {
    host.hypercall(dom, Hypercall::GrantTableOp { cmd, count: 1, arg })
        .rc
}

/// `memory_op` `cmd` on one order-0 extent: a machine frame to give back
/// (decrease), or a guest frame to fill (populate). Returns the extents
/// done.
fn reservation(host: &mut Host<'_>, dom: DomId, cmd: u32, frame: u64) -> i64 {
    let mut list = [frame];
    host.hypercall(
        dom,
        Hypercall::MemoryOp {
            cmd: u64::from(cmd),
            arg: MemoryArg::Reservation(Reservation {
                extents: Some(&mut list),
                nr_extents: 1,
                extent_order: 0,
                mem_flags: 0,
                domid: DomId::SELF,
            }),
        },
    )
    .rc
}

fn mfn_of(host: &Host<'_>, dom: DomId, gfn: Gfn) -> Result<Mfn, Violation> {
    host.domain(dom)
        .and_then(|d| d.mfn(gfn))
        .ok_or(Violation::Physmap {
            mfn: Mfn::new(gfn.get()),
        })
}

fn grant_failed(mfn: Mfn) -> Violation {
    Violation::Grant { mfn }
}

impl SplitIo {
    /// Makes `guests[0]` the backend of every other guest. `None` with
    /// fewer than two guests, or when a guest has no pages to spare for
    /// its buffers.
    ///
    /// # Errors
    ///
    /// A [`Violation`] if the host refuses an honest table setup.
    pub fn new(host: &mut Host<'_>, guests: &mut [Guest]) -> Result<Option<Self>, Violation> {
        let Some((backend, rest)) = guests.split_first_mut() else {
            return Ok(None);
        };
        if rest.is_empty() {
            return Ok(None);
        }
        let Some(&[backend_buf, flip_buf]) = backend.take_io_pages(2).as_deref() else {
            return Ok(None);
        };
        let mut io = Self {
            backend: backend.id(),
            backend_buf,
            flip_buf,
            frontends: Vec::new(),
            serial: 0,
            stats: IoStats::default(),
        };
        for (i, g) in rest.iter_mut().enumerate() {
            let Some(&[write_buf, read_buf, rx_slot]) = g.take_io_pages(3).as_deref() else {
                return Ok(None);
            };
            let dom = g.id();
            let bad = Violation::Grant {
                mfn: Mfn::new(u64::from(dom.get())),
            };
            let mut setup = GnttabSetupTable {
                dom: DomId::SELF.get(),
                nr_frames: 1,
                ..Default::default()
            };
            let mut list = [0u64; 1];
            let rc = grant_call(
                host,
                dom,
                SETUP,
                GrantArg::SetupTable(&mut setup, &mut list),
            );
            let mut query = GnttabQuerySize {
                dom: DomId::SELF.get(),
                ..Default::default()
            };
            let rq = grant_call(host, dom, QUERY, GrantArg::QuerySize(&mut query));
            if rc != 0 || setup.status != 0 || rq != 0 || query.status != 0 || query.nr_frames != 1
            {
                return Err(bad);
            }
            io.stats.hypercalls += 2;
            if i % 2 == 1 {
                let mut v = GnttabSetVersion { version: 2 };
                io.stats.hypercalls += 1;
                if grant_call(host, dom, SET_VERSION, GrantArg::SetVersion(&mut v)) != 0
                    || v.version != 2
                {
                    return Err(bad);
                }
            }
            io.give_back_rx_slot(host, dom, rx_slot)?;
            io.frontends.push(Frontend {
                dom,
                write_buf,
                read_buf,
                rx_slot,
                inflight: None,
            });
        }
        Ok(Some(io))
    }

    fn fingerprint(&mut self, dom: DomId) -> u64 {
        self.serial += 1;
        mix(0x10_0000 ^ u64::from(dom.get()) << 40 ^ self.serial) | 0x200
    }

    /// One second of I/O for every frontend.
    ///
    /// # Errors
    ///
    /// A [`Violation`] when a grant operation of the honest drivers fails
    /// or a page does not hold what was written.
    pub fn step(&mut self, host: &mut Host<'_>) -> Result<(), Violation> {
        for i in 0..self.frontends.len() {
            self.complete_write(host, i)?;
            self.write(host, i)?;
            self.read(host, i)?;
            self.receive(host, i)?;
        }
        Ok(())
    }

    /// The frontend gives the frame at its rx slot back to Xen and offers
    /// the slot to the backend for the next packet.
    fn give_back_rx_slot(
        &mut self,
        host: &mut Host<'_>,
        dom: DomId,
        rx_slot: Gfn,
    ) -> Result<(), Violation> {
        let mfn = mfn_of(host, dom, rx_slot)?;
        if reservation(host, dom, XENMEM_DECREASE_RESERVATION, mfn.get()) != 1 {
            return Err(Violation::DomainPages {
                domid: dom,
                books: 1,
                frames: 0,
            });
        }
        self.stats.hypercalls += 1;
        // PV: the offer names the pseudo-physical frame to fill.
        let offered = host
            .guest_grant_table(dom)
            .map(|t| t.grant_transfer(RX_REF, self.backend, rx_slot));
        if offered != Some(Ok(())) {
            return Err(grant_failed(mfn));
        }
        Ok(())
    }

    fn receive(&mut self, host: &mut Host<'_>, i: usize) -> Result<(), Violation> {
        let backend = self.backend;
        let Some((dom, rx_slot)) = self.frontends.get(i).map(|f| (f.dom, f.rx_slot)) else {
            return Ok(());
        };
        // The backend's packet page, repopulated after the last flip.
        let src = match host.domain(backend).and_then(|d| d.mfn(self.flip_buf)) {
            Some(mfn) => mfn,
            None => {
                self.stats.hypercalls += 1;
                let filled =
                    reservation(host, backend, XENMEM_POPULATE_PHYSMAP, self.flip_buf.get());
                match host.domain(backend).and_then(|d| d.mfn(self.flip_buf)) {
                    Some(mfn) if filled == 1 => mfn,
                    _ => {
                        self.stats.flips_dropped += 1;
                        return Ok(());
                    }
                }
            }
        };
        let fp = self.fingerprint(backend);
        host.guest_store(backend, src, fp)
            .map_err(|_| Violation::GuestData { mfn: src })?;
        let mut op = [GnttabTransfer {
            mfn: src.get(),
            domid: dom.get(),
            gref: RX_REF.0,
            ..Default::default()
        }];
        let rc = grant_call(host, backend, TRANSFER, GrantArg::Transfer(&mut op));
        self.stats.hypercalls += 1;
        if rc != 0 {
            return Err(grant_failed(src));
        }
        if op[0].status == GntSt::GeneralError.raw() {
            // Not delivered (the frontend is at its max_pages): the frame
            // is gone, the offer stands for the next packet.
            self.stats.flips_dropped += 1;
            return Ok(());
        }
        if op[0].status != GntSt::Okay.raw() {
            return Err(grant_failed(src));
        }
        let ended = host.guest_grant_table(dom).map(|t| t.end_transfer(RX_REF));
        if ended != Some(Ok(TransferEnd::Received(src.get())))
            || host.domain(dom).and_then(|d| d.mfn(rx_slot)) != Some(src)
        {
            return Err(grant_failed(src));
        }
        if host.memory().fingerprint(src) != Some(fp) {
            return Err(Violation::GuestData { mfn: src });
        }
        self.stats.flips += 1;
        self.give_back_rx_slot(host, dom, rx_slot)
    }

    fn complete_write(&mut self, host: &mut Host<'_>, i: usize) -> Result<(), Violation> {
        let backend = self.backend;
        let Some(f) = self.frontends.get_mut(i) else {
            return Ok(());
        };
        let Some((handle, host_addr, mfn, fp)) = f.inflight.take() else {
            return Ok(());
        };
        if host.memory().fingerprint(mfn) != Some(fp) {
            return Err(Violation::GuestData { mfn });
        }
        let mut unmap = [GnttabUnmapGrantRef {
            host_addr,
            handle,
            ..Default::default()
        }];
        let rc = grant_call(host, backend, UNMAP, GrantArg::Unmap(&mut unmap));
        self.stats.hypercalls += 1;
        if rc != 0 || unmap[0].status != GntSt::Okay.raw() {
            return Err(grant_failed(mfn));
        }
        let dom = f.dom;
        let ended = host.guest_grant_table(dom).map(|t| t.end_access(WRITE_REF));
        if ended != Some(Ok(())) {
            return Err(grant_failed(mfn));
        }
        self.stats.writes += 1;
        Ok(())
    }

    fn write(&mut self, host: &mut Host<'_>, i: usize) -> Result<(), Violation> {
        let backend = self.backend;
        let Some(dom) = self.frontends.get(i).map(|f| f.dom) else {
            return Ok(());
        };
        let fp = self.fingerprint(dom);
        let Some(f) = self.frontends.get_mut(i) else {
            return Ok(());
        };
        let mfn = mfn_of(host, dom, f.write_buf)?;
        host.guest_store(dom, mfn, fp)
            .map_err(|_| Violation::GuestData { mfn })?;
        // PV: the grant names the machine frame.
        let granted = host
            .guest_grant_table(dom)
            .map(|t| t.grant_access(WRITE_REF, backend, Gfn::new(mfn.get()), true));
        if granted != Some(Ok(())) {
            return Err(grant_failed(mfn));
        }
        let host_addr = 0x4000_0000 + (i as u64) * 0x1000;
        let mut map = [GnttabMapGrantRef {
            host_addr,
            flags: (GntMapFlags::HOST_MAP | GntMapFlags::READONLY).bits(),
            gref: WRITE_REF.0,
            dom: dom.get(),
            ..Default::default()
        }];
        let rc = grant_call(host, backend, MAP, GrantArg::Map(&mut map));
        self.stats.hypercalls += 1;
        if rc != 0 || map[0].status != GntSt::Okay.raw() || map[0].dev_bus_addr >> 12 != mfn.get() {
            return Err(grant_failed(mfn));
        }
        f.inflight = Some((map[0].handle, host_addr, mfn, fp));
        Ok(())
    }

    fn read(&mut self, host: &mut Host<'_>, i: usize) -> Result<(), Violation> {
        let backend = self.backend;
        let Some(dom) = self.frontends.get(i).map(|f| f.dom) else {
            return Ok(());
        };
        let fp = self.fingerprint(backend);
        let src = mfn_of(host, backend, self.backend_buf)?;
        host.guest_store(backend, src, fp)
            .map_err(|_| Violation::GuestData { mfn: src })?;
        let Some(f) = self.frontends.get(i) else {
            return Ok(());
        };
        let dst = mfn_of(host, dom, f.read_buf)?;
        let granted = host
            .guest_grant_table(dom)
            .map(|t| t.grant_access(READ_REF, backend, Gfn::new(dst.get()), false));
        if granted != Some(Ok(())) {
            return Err(grant_failed(dst));
        }
        let mut copy = [GnttabCopy {
            source: GnttabCopyPtr::frame(DomId::SELF.get(), src.get(), 0),
            dest: GnttabCopyPtr::grant(dom.get(), READ_REF, 0),
            len: 4096,
            flags: GntCopyFlags::DEST_GREF.bits(),
            ..Default::default()
        }];
        let rc = grant_call(host, backend, COPY, GrantArg::Copy(&mut copy));
        self.stats.hypercalls += 1;
        if rc != 0 || copy[0].status != GntSt::Okay.raw() {
            return Err(grant_failed(dst));
        }
        let ended = host.guest_grant_table(dom).map(|t| t.end_access(READ_REF));
        if ended != Some(Ok(())) {
            return Err(grant_failed(dst));
        }
        if host.memory().fingerprint(dst) != Some(fp) {
            return Err(Violation::GuestData { mfn: dst });
        }
        self.stats.reads += 1;
        Ok(())
    }
}

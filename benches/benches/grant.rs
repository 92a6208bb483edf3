//! `hvmem-grant` hypercall paths against their floors.
//!
//! The frame references go through a minimal [`GrantFrames`] (one atomic
//! count pair per frame, identity translation), so the figures are the
//! grant table's own cost plus what any frame table must spend on counting.
//!
//! | group | one iteration |
//! |---|---|
//! | `map_unmap` | `map_grant_ref` (v1, host, read-write) + `unmap_grant_ref` of one grant |
//! | `map_batch_64` | one `map_grant_refs` call of 64 maps (the unmaps run untimed) |
//! | `copy_4k` | `GNTTABOP_copy` of a whole 4 KiB page from a grant to a local frame, against a plain 4 KiB `copy_within` between the same two frames (the floor) |
//! | `copy_batch_8x512` | one `GNTTABOP_copy` batch of eight 512-byte pieces of one grant into one local frame (the batch keeps both claims), against eight 512-byte `copy_within`s (the floor) |
//!
//! ```text
//! cargo bench -p hvmem-benches --bench grant -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "bench setup: a broken table must stop the bench loudly"
)]

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hvmem_grant::{
    ActiveEntry, Domains, GfnError, GntCopyFlags, GntMapFlags, GntSt, GnttabCopy, GnttabCopyPtr,
    GnttabMapGrantRef, GnttabUnmapGrantRef, GrantFrames, GrantRef, GrantTable, GrantTableConfig,
    GrantVersion, GuestGrantTable, Maptrack, MaptrackEntry, SliceMemory, StealError,
};
use hvmem_types::{DomId, Gfn, Mfn};

const GRANTER: DomId = DomId::new(1);
const MAPPER: DomId = DomId::new(2);
const FRAMES: usize = 80;
const PAGE: usize = 4096;

/// Counts per frame, identity translation, frame contents for copy.
struct BenchFrames {
    refs: Vec<AtomicU32>,
    types: Vec<AtomicU32>,
    memory: RefCell<Vec<u8>>,
}

impl BenchFrames {
    fn new() -> Self {
        Self {
            refs: (0..FRAMES).map(|_| AtomicU32::new(0)).collect(),
            types: (0..FRAMES).map(|_| AtomicU32::new(0)).collect(),
            memory: RefCell::new(vec![0x5a; FRAMES * PAGE]),
        }
    }

    fn count(&self, mfn: Mfn) -> Option<&AtomicU32> {
        self.refs.get(mfn.get() as usize)
    }
}

impl GrantFrames for BenchFrames {
    fn get_gfn(&self, _: DomId, gfn: u64) -> Result<Mfn, GfnError> {
        let mfn = Mfn::new(gfn);
        let count = self.count(mfn).ok_or(GfnError::BadPage)?;
        count.fetch_add(1, Ordering::Acquire);
        Ok(mfn)
    }

    fn get_page(&self, _: DomId, mfn: Mfn) -> bool {
        self.count(mfn)
            .map(|count| count.fetch_add(1, Ordering::Acquire))
            .is_some()
    }

    fn put_page(&self, mfn: Mfn) {
        if let Some(count) = self.count(mfn) {
            count.fetch_sub(1, Ordering::Release);
        }
    }

    fn get_page_and_type(&self, owner: DomId, mfn: Mfn) -> bool {
        let taken = self.get_page(owner, mfn);
        if taken {
            self.types[mfn.get() as usize].fetch_add(1, Ordering::Acquire);
        }
        taken
    }

    fn get_type(&self, _: DomId, mfn: Mfn) -> bool {
        self.types
            .get(mfn.get() as usize)
            .map(|count| count.fetch_add(1, Ordering::Acquire))
            .is_some()
    }

    fn put_page_and_type(&self, mfn: Mfn) {
        self.types[mfn.get() as usize].fetch_sub(1, Ordering::Release);
        self.put_page(mfn);
    }

    fn copy(&self, src: Mfn, src_offset: usize, dst: Mfn, dst_offset: usize, len: usize) {
        let from = src.get() as usize * PAGE + src_offset;
        let to = dst.get() as usize * PAGE + dst_offset;
        self.memory.borrow_mut().copy_within(from..from + len, to);
    }

    fn steal_page(&self, _: DomId, _: u64) -> Result<Mfn, StealError> {
        Err(StealError::BadPage)
    }

    fn can_receive(&self, _: DomId) -> bool {
        false
    }

    fn assign_page(&self, _: DomId, _: Mfn, _: u64) -> bool {
        false
    }

    fn free_page(&self, _: Mfn) {}
}

struct One<'t>(&'t GrantTable<'t>);

impl Domains for One<'_> {
    #[inline]
    fn grant_table(&self, dom: DomId) -> Option<&GrantTable<'_>> {
        (dom == self.0.owner()).then_some(self.0)
    }
}

/// The storage of one granter and one mapper, with grants 8..72 of frames
/// 8..72 to the mapper, read-write.
struct Setup {
    words: Vec<AtomicU32>,
    active: Vec<ActiveEntry>,
    maptrack: Vec<MaptrackEntry>,
    frames: BenchFrames,
}

impl Setup {
    fn new() -> Self {
        Self {
            words: (0..1024).map(|_| AtomicU32::new(0)).collect(),
            active: (0..512).map(|_| ActiveEntry::new()).collect(),
            maptrack: (0..128).map(|_| MaptrackEntry::new()).collect(),
            frames: BenchFrames::new(),
        }
    }
}

fn map_op(gref: u32) -> GnttabMapGrantRef {
    GnttabMapGrantRef {
        host_addr: 0x7000_0000 + u64::from(gref) * 0x1000,
        flags: GntMapFlags::HOST_MAP.bits(),
        gref,
        dom: GRANTER.get(),
        ..Default::default()
    }
}

fn benches(c: &mut Criterion) {
    let setup = Setup::new();
    let status: [AtomicU16; 0] = [];
    let mem = SliceMemory::new(&setup.words, &status, 0, 0);
    let table =
        GrantTable::new(GRANTER, &mem, &setup.active, GrantTableConfig::DEFAULT).expect("table");
    let guest = GuestGrantTable::new(&mem, GrantVersion::V1, 1);
    for gref in 8..72 {
        guest
            .grant_access(GrantRef(gref), MAPPER, Gfn::new(u64::from(gref)), false)
            .expect("grant");
    }
    let maptrack = Maptrack::new(MAPPER, false, &setup.maptrack, 128);
    let domains = One(&table);
    let frames = &setup.frames;

    let mut group = c.benchmark_group("map_unmap");
    group.bench_function("hvmem_grant", |b| {
        b.iter(|| {
            let mut op = map_op(black_box(8));
            maptrack.map_grant_ref(&domains, frames, &mut op);
            debug_assert_eq!(op.status, GntSt::Okay.raw());
            let mut unmap = GnttabUnmapGrantRef {
                host_addr: op.host_addr,
                handle: op.handle,
                ..Default::default()
            };
            maptrack.unmap_grant_ref(&domains, frames, &mut unmap, &mut || {});
            black_box(unmap.status);
        });
    });
    group.finish();

    let mut group = c.benchmark_group("map_batch_64");
    group.bench_function("hvmem_grant", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut ops: Vec<GnttabMapGrantRef> = (8..72).map(map_op).collect();
            for _ in 0..iters {
                let began = Instant::now();
                maptrack.map_grant_refs(&domains, frames, black_box(&mut ops));
                total += began.elapsed();
                let mut unmaps: Vec<GnttabUnmapGrantRef> = ops
                    .iter()
                    .map(|op| GnttabUnmapGrantRef {
                        host_addr: op.host_addr,
                        handle: op.handle,
                        ..Default::default()
                    })
                    .collect();
                maptrack.unmap_grant_refs(&domains, frames, &mut unmaps, &mut || {});
                assert!(ops.iter().all(|op| op.status == GntSt::Okay.raw()));
            }
            total
        });
    });
    group.finish();

    let mut group = c.benchmark_group("copy_4k");
    // The floor moves the same bytes: frame 8 to frame 79 of the same
    // memory the grant copy uses.
    group.bench_function("memcpy_floor", |b| {
        b.iter(|| {
            let mut memory = frames.memory.borrow_mut();
            let from = black_box(8 * PAGE);
            memory.copy_within(from..from + PAGE, black_box(79 * PAGE));
        });
    });
    let mut op = GnttabCopy {
        source: GnttabCopyPtr::grant(GRANTER.get(), GrantRef(8), 0),
        dest: GnttabCopyPtr::frame(DomId::SELF.get(), 79, 0),
        len: PAGE as u16,
        flags: GntCopyFlags::SOURCE_GREF.bits(),
        ..Default::default()
    };
    group.bench_function("hvmem_grant", |b| {
        b.iter(|| {
            hvmem_grant::copy(
                MAPPER,
                &domains,
                frames,
                std::slice::from_mut(black_box(&mut op)),
            );
            debug_assert_eq!(op.status, GntSt::Okay.raw());
        });
    });
    group.finish();
    assert_eq!(op.status, GntSt::Okay.raw());

    // A batch that keeps its claims: one grant copied in eight 512-byte
    // pieces into one local frame (both sides named by every element).
    let mut group = c.benchmark_group("copy_batch_8x512");
    group.bench_function("memcpy_floor", |b| {
        b.iter(|| {
            let mut memory = frames.memory.borrow_mut();
            for piece in 0..8 {
                let from = black_box(8 * PAGE + piece * 512);
                memory.copy_within(from..from + 512, black_box(79 * PAGE + piece * 512));
            }
        });
    });
    let mut ops: Vec<GnttabCopy> = (0..8u16)
        .map(|piece| GnttabCopy {
            source: GnttabCopyPtr::grant(GRANTER.get(), GrantRef(8), piece * 512),
            dest: GnttabCopyPtr::frame(DomId::SELF.get(), 79, piece * 512),
            len: 512,
            flags: GntCopyFlags::SOURCE_GREF.bits(),
            ..Default::default()
        })
        .collect();
    group.bench_function("hvmem_grant", |b| {
        b.iter(|| {
            hvmem_grant::copy(MAPPER, &domains, frames, black_box(&mut ops));
        });
    });
    group.finish();
    assert!(ops.iter().all(|op| op.status == GntSt::Okay.raw()));
}

criterion_group! {
    name = grant;
    config = hvmem_benches::criterion();
    targets = benches
}
criterion_main!(grant);

//! `hvmem-sim`: simulated hypercalls per second, and what the invariant
//! checks cost per step as the host grows.
//!
//! | group | one iteration |
//! |---|---|
//! | `hypercalls_mixed` | 128 hypercalls on a 256 MiB host with one guest: 64 `mmu_update`s flipping RW on a live L1 entry, 16 pin + unpin pairs of a four-level tree (each pin validates the tree, each unpin de-validates it), 16 `populate_physmap` + 16 `decrease_reservation` of one page; criterion's throughput is hypercalls per second |
//! | `check_counters/<MiB>` | the per-step check (O(domains)): heap vs books, conservation, per-domain pages and max |
//! | `audit/<MiB>` | the full audit (O(frames)): owners, physmaps, every frame's reference and type counts against the live page tables |
//!
//! The per-step check stays flat as memory grows; the audit grows linearly
//! and runs every N steps (200 in the main job), so its cost per step is
//! `audit / N`.
//!
//! ```text
//! cargo bench -p hvmem-benches --bench sim -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "bench setup: a broken host must stop the bench loudly"
)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hvmem_pagetable::pv::MmuUpdate;
use hvmem_sim::abi::{
    MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE, XENMEM_DECREASE_RESERVATION, XENMEM_POPULATE_PHYSMAP,
};
use hvmem_sim::host::{Host, HostConfig, HostStorage};
use hvmem_sim::hypercall::{Hypercall, MemoryArg, MmuextOp, Reservation};
use hvmem_types::{DomId, Gfn, Mfn};

const GUEST: DomId = DomId::new(1);
const P: u64 = 1;
const RW: u64 = 2;

fn mfn(host: &Host<'_>, gfn: u64) -> Mfn {
    host.domain(GUEST).unwrap().mfn(Gfn::new(gfn)).unwrap()
}

fn update(host: &mut Host<'_>, table: Mfn, index: u64, val: u64) {
    let req = [MmuUpdate {
        ptr: (table.get() << 12) | (index * 8),
        val,
    }];
    let out = host.hypercall(
        GUEST,
        Hypercall::MmuUpdate {
            requests: &req,
            foreigndom: DomId::SELF,
        },
    );
    assert_eq!(out.rc, 0);
}

fn mmuext(host: &mut Host<'_>, cmd: u32, table: Mfn) {
    let out = host.hypercall(
        GUEST,
        Hypercall::MmuextOp {
            ops: &[MmuextOp {
                cmd,
                mfn: table.get(),
            }],
            foreigndom: DomId::SELF,
        },
    );
    assert_eq!(out.rc, 0);
}

fn memory_op(host: &mut Host<'_>, op: u32, value: u64) -> u64 {
    let mut list = [value];
    let rc = host
        .hypercall(
            GUEST,
            Hypercall::MemoryOp {
                cmd: u64::from(op),
                arg: MemoryArg::Reservation(Reservation {
                    extents: Some(&mut list),
                    nr_extents: 1,
                    extent_order: 0,
                    mem_flags: 0,
                    domid: DomId::SELF,
                }),
            },
        )
        .rc;
    assert_eq!(rc, 1);
    list[0]
}

fn hypercalls_mixed(c: &mut Criterion) {
    let mut storage = HostStorage::new(HostConfig::with_mib(256));
    let mut host = Host::boot(&mut storage).expect("boot");
    host.create_domain(GUEST, 40_000, 32_768).expect("guest");
    // Guest frames 0..4: a tree (L4, L3, L2, L1); frame 10 its data page.
    let t = [0, 1, 2, 3].map(|g| mfn(&host, g));
    let data = mfn(&host, 10);
    update(&mut host, t[3], 0, data.get() << 12 | P | RW);
    update(&mut host, t[2], 0, t[3].get() << 12 | P | RW);
    update(&mut host, t[1], 0, t[2].get() << 12 | P | RW);
    update(&mut host, t[0], 0, t[1].get() << 12 | P | RW);
    mmuext(&mut host, MMUEXT_PIN_L4_TABLE, t[0]);
    let mut group = c.benchmark_group("hypercalls_mixed");
    group.throughput(Throughput::Elements(128));
    group.bench_function("128_calls", |b| {
        b.iter(|| {
            for i in 0..64u64 {
                let rw = if i % 2 == 0 { 0 } else { RW };
                update(&mut host, t[3], 0, data.get() << 12 | P | rw);
            }
            for _ in 0..16 {
                mmuext(&mut host, MMUEXT_UNPIN_TABLE, t[0]);
                mmuext(&mut host, MMUEXT_PIN_L4_TABLE, t[0]);
            }
            for g in 0..16u64 {
                let m = memory_op(&mut host, XENMEM_POPULATE_PHYSMAP, 39_000 + g);
                black_box(memory_op(&mut host, XENMEM_DECREASE_RESERVATION, m));
            }
        });
    });
    group.finish();
    host.audit().expect("invariants hold after the bench");
}

fn invariant_checks(c: &mut Criterion) {
    let mut counters = c.benchmark_group("check_counters");
    let sizes = [64u64, 1024, 4096];
    for mib in sizes {
        let mut storage = HostStorage::new(HostConfig::with_mib(mib));
        let mut host = Host::boot(&mut storage).expect("boot");
        let share = host.guest_frames() / 8;
        for d in 1..=8 {
            host.create_domain(DomId::new(d), share, share)
                .expect("guest");
        }
        counters.bench_with_input(BenchmarkId::from_parameter(mib), &host, |b, host| {
            b.iter(|| black_box(host.check_counters()).expect("holds"));
        });
    }
    counters.finish();
    let mut audit = c.benchmark_group("audit");
    audit.sample_size(10);
    for mib in [64u64, 1024] {
        let mut storage = HostStorage::new(HostConfig::with_mib(mib));
        let mut host = Host::boot(&mut storage).expect("boot");
        let share = host.guest_frames() / 8;
        for d in 1..=8 {
            host.create_domain(DomId::new(d), share, share)
                .expect("guest");
        }
        audit.throughput(Throughput::Elements(host.total_frames()));
        audit.bench_with_input(BenchmarkId::from_parameter(mib), &host, |b, host| {
            b.iter(|| black_box(host.audit()).expect("holds"));
        });
    }
    audit.finish();
}

criterion_group! {
    name = benches;
    config = hvmem_benches::criterion();
    targets = hypercalls_mixed, invariant_checks
}
criterion_main!(benches);

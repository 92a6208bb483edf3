//! Unit tests of the Xen machines, each named after the rule it guards, and
//! the model-based property tests.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeSet;
use std::vec::Vec;

use hvmem_types::{DomId, Gfn};
use proptest::prelude::*;

use crate::GuestPages;
use crate::xen::abi::{MemoryOp, XenMemoryReservation, kib_to_pages, pages_to_kib};
use crate::xen::domain::{ClaimError, CreateError, HostMemory, ReservationError};
use crate::xen::driver::{
    BalloonDriver, BalloonState, CompleteError, DriverConfig, GuestKind, Next, PollError, Step,
    TargetError, Wake,
};
use crate::xen::selfballoon::{MemInfo, SelfBalloon, SelfBalloonConfig, TickError};
use crate::xen::toolstack::{DomainBounds, Mode, RebalanceError, Toolstack};

/// The guest kernel's free pages.
#[derive(Default)]
pub(crate) struct FreeList(pub(crate) BTreeSet<u64>);

impl FreeList {
    pub(crate) fn of(range: core::ops::Range<u64>) -> Self {
        Self(range.collect())
    }
}

impl GuestPages for FreeList {
    fn alloc_page(&mut self) -> Option<Gfn> {
        self.0.pop_last().map(Gfn::new)
    }
    fn free_page(&mut self, gfn: Gfn) {
        assert!(self.0.insert(gfn.get()), "{gfn} freed twice");
    }
}

/// A PV guest of 64 frames, 48 populated, static-max 64 frames.
fn driver() -> BalloonDriver<[u64; 1], 8> {
    BalloonDriver::new(DriverConfig::linux(GuestKind::Pv, 64, 48, 256), [0; 1]).unwrap()
}

fn frames(step: Step<'_>) -> Vec<Gfn> {
    match step {
        Step::Hypercall(r) => r.extents.to_vec(),
        other => panic!("expected a hypercall, got {other:?}"),
    }
}

#[test]
fn abi_numbers_and_layout_match_xen() {
    assert_eq!(MemoryOp::IncreaseReservation.number(), 0);
    assert_eq!(MemoryOp::DecreaseReservation.number(), 1);
    assert_eq!(MemoryOp::CurrentReservation.number(), 3);
    assert_eq!(MemoryOp::MaximumReservation.number(), 4);
    assert_eq!(MemoryOp::PopulatePhysmap.number(), 6);
    assert_eq!(MemoryOp::ClaimPages.number(), 24);
    assert_eq!(core::mem::size_of::<XenMemoryReservation>(), 32);
    assert_eq!(kib_to_pages(4096), 1024);
    assert_eq!(pages_to_kib(1024), Some(4096));
}

#[test]
fn target_above_static_max_is_refused_and_changes_nothing() {
    let mut d = driver();
    let before = d.clone();
    assert_eq!(
        d.set_target_kib(257),
        Err(TargetError::AboveStaticMax {
            target_kib: 257,
            static_max_kib: 256
        })
    );
    assert_eq!(d, before);
}

#[test]
fn target_in_kib_becomes_pages_and_a_decrease_takes_guest_pages_in_batches() {
    let mut d = driver();
    let mut guest = FreeList::of(0..48);
    assert_eq!(d.set_target_kib(30 * 4), Ok(Wake::Now));
    assert_eq!(d.target_pages(), 30);
    let step = d.poll(&mut guest).unwrap();
    let Step::Hypercall(r) = step else { panic!() };
    assert_eq!(
        (r.op, r.domid, r.extent_order, r.extents.len()),
        (MemoryOp::DecreaseReservation, DomId::SELF, 0, 8)
    );
    assert_eq!(d.poll(&mut guest), Err(PollError::BatchInFlight));
    assert_eq!(d.complete(8, &mut guest), Ok(Next::Now));
    assert_eq!((d.current_pages(), d.ballooned_pages()), (40, 24));
    while d.credit() != 0 {
        let n = frames(d.poll(&mut guest).unwrap()).len() as i64;
        let _ = d.complete(n, &mut guest).unwrap();
    }
    assert_eq!(
        (d.current_pages(), d.ballooned_pages(), guest.0.len()),
        (30, 34, 30)
    );
    assert_eq!(d.poll(&mut guest), Ok(Step::Idle));
}

#[test]
fn populate_brings_back_the_lowest_parked_frames_and_hands_them_to_the_guest() {
    let mut d = driver();
    let mut guest = FreeList::default();
    let _ = d.set_target_kib(52 * 4).unwrap();
    let batch = frames(d.poll(&mut guest).unwrap());
    assert_eq!(batch, (48..52).map(Gfn::new).collect::<Vec<_>>());
    let _ = d.complete(4, &mut guest).unwrap();
    assert_eq!(guest.0, (48..52).collect());
    assert!(!d.is_ballooned(Gfn::new(48)) && d.is_ballooned(Gfn::new(52)));
}

#[test]
fn partial_populate_moves_only_the_first_extents_and_retries() {
    let mut d = driver();
    let mut guest = FreeList::default();
    let _ = d.set_target_kib(56 * 4).unwrap();
    let _ = frames(d.poll(&mut guest).unwrap());
    assert_eq!(d.complete(3, &mut guest), Ok(Next::Now));
    assert_eq!(d.current_pages(), 51);
    assert!(d.is_ballooned(Gfn::new(51)));
    // Xen has nothing: back off.
    let _ = frames(d.poll(&mut guest).unwrap());
    assert_eq!(d.complete(-12, &mut guest), Ok(Next::Sleep { seconds: 2 }));
    assert_eq!(d.state(), BalloonState::EAgain);
}

#[test]
fn short_decrease_hands_the_unmoved_pages_back_instead_of_crashing() {
    let mut d = driver();
    let mut guest = FreeList::of(0..48);
    let _ = d.set_target_kib(40 * 4).unwrap();
    let batch = frames(d.poll(&mut guest).unwrap());
    assert_eq!(d.complete(5, &mut guest), Ok(Next::Sleep { seconds: 2 }));
    assert_eq!(d.current_pages(), 43);
    for gfn in &batch[5..] {
        assert!(guest.0.contains(&gfn.get()) && !d.is_ballooned(*gfn));
    }
    for gfn in &batch[..5] {
        assert!(!guest.0.contains(&gfn.get()) && d.is_ballooned(*gfn));
    }
}

#[test]
fn back_off_doubles_to_the_cap_then_gives_up_until_the_target_changes() {
    let mut config = DriverConfig::linux(GuestKind::Pv, 64, 48, 256);
    config.max_retry_count = 6;
    config.max_schedule_delay = 8;
    let mut d: BalloonDriver<[u64; 1], 8> = BalloonDriver::new(config, [0; 1]).unwrap();
    let mut guest = FreeList::default();
    let _ = d.set_target_kib(60 * 4).unwrap();
    let mut delays = Vec::new();
    loop {
        let _ = frames(d.poll(&mut guest).unwrap());
        match d.complete(0, &mut guest).unwrap() {
            Next::Sleep { seconds } => delays.push(seconds),
            Next::Idle => break,
            Next::Now => panic!("no progress yet it runs again"),
        }
    }
    assert_eq!(delays, [2, 4, 8, 8, 8]);
    assert_eq!(d.state(), BalloonState::ECanceled);
    // The same target does not wake it; a new one does.
    assert_eq!(d.set_target_kib(60 * 4), Ok(Wake::NotYet));
    assert_eq!(d.set_target_kib(59 * 4), Ok(Wake::Now));
}

#[test]
fn completion_claiming_more_than_asked_is_refused_and_changes_nothing() {
    let mut d = driver();
    let mut guest = FreeList::of(0..48);
    let _ = d.set_target_kib(44 * 4).unwrap();
    let _ = frames(d.poll(&mut guest).unwrap());
    let before = d.clone();
    assert_eq!(
        d.complete(5, &mut guest),
        Err(CompleteError::MoreThanAsked { done: 5, asked: 4 })
    );
    assert_eq!(d, before);
    let _ = d.complete(4, &mut guest).unwrap();
    assert_eq!(d.complete(1, &mut guest), Err(CompleteError::NoBatch));
}

#[test]
fn a_target_moved_mid_batch_cancels_the_rest_of_the_move() {
    let mut d = driver();
    let mut guest = FreeList::of(0..48);
    let _ = d.set_target_kib(20 * 4).unwrap();
    let _ = frames(d.poll(&mut guest).unwrap());
    // The toolstack changes its mind while the first batch is in flight.
    let _ = d.set_target_kib(40 * 4).unwrap();
    assert_eq!(d.complete(8, &mut guest), Ok(Next::Idle));
    assert_eq!(d.current_pages(), 40);
    assert_eq!(d.poll(&mut guest), Ok(Step::Idle));
}

#[test]
fn an_abandoned_decrease_gives_its_pages_back_to_the_guest() {
    let mut d = driver();
    let mut guest = FreeList::of(0..48);
    let _ = d.set_target_kib(44 * 4).unwrap();
    let _ = frames(d.poll(&mut guest).unwrap());
    assert_eq!(guest.0.len(), 44);
    d.abandon(&mut guest).unwrap();
    assert_eq!(
        (guest.0.len(), d.current_pages(), d.in_flight()),
        (48, 48, None)
    );
}

#[test]
fn an_empty_balloon_with_credit_cancels_and_cuts_the_target() {
    let mut d: BalloonDriver<[u64; 1], 8> =
        BalloonDriver::new(DriverConfig::linux(GuestKind::Pv, 64, 64, 512), [0; 1]).unwrap();
    let _ = d.set_target_kib(70 * 4).unwrap();
    assert_eq!(d.poll(&mut FreeList::default()), Ok(Step::Idle));
    assert_eq!((d.state(), d.target_pages()), (BalloonState::ECanceled, 64));
}

#[test]
fn a_guest_allocator_handing_out_a_ballooned_or_foreign_frame_is_refused() {
    struct Liar(Vec<u64>);
    impl GuestPages for Liar {
        fn alloc_page(&mut self) -> Option<Gfn> {
            self.0.pop().map(Gfn::new)
        }
        fn free_page(&mut self, _: Gfn) {}
    }
    for bad in [50, 64, 1 << 40, 3] {
        let mut d = driver();
        let _ = d.set_target_kib(40 * 4).unwrap();
        let before = d.clone();
        // 3 twice: the second is a duplicate.
        let mut guest = Liar(std::vec![bad, 3, 1]);
        assert_eq!(
            d.poll(&mut guest),
            Err(PollError::BadGuestPage { gfn: Gfn::new(bad) })
        );
        assert_eq!(d, before);
    }
}

#[test]
fn a_translated_guest_takes_every_target_less_the_hidden_memory() {
    // static-max 64 pages, 60 of them RAM at boot: 4 pages never visible.
    let mut d: BalloonDriver<[u64; 1], 8> = BalloonDriver::new(
        DriverConfig::linux(GuestKind::Translated, 64, 60, 256),
        [0; 1],
    )
    .unwrap();
    let _ = d.set_target_kib(256).unwrap();
    assert_eq!(d.target_pages(), 60);
    let _ = d.set_target_kib(200).unwrap();
    assert_eq!(d.target_pages(), 46);
    let before = d.clone();
    assert!(matches!(
        d.set_target_kib(8),
        Err(TargetError::BelowHiddenMemory { .. })
    ));
    assert_eq!(d, before);
}

fn dom(n: u16) -> DomId {
    DomId::new(n)
}

#[test]
fn a_claim_stakes_free_memory_that_other_domains_cannot_take() {
    let mut h: HostMemory<3> = HostMemory::new(100);
    h.create_domain(dom(1), 100).unwrap();
    h.create_domain(dom(2), 100).unwrap();
    h.claim_pages(dom(1), 70).unwrap();
    assert_eq!(h.unclaimed_free_pages(), 30);
    // Domain 2 gets only unclaimed memory, and stops there.
    assert_eq!(h.populate_physmap(dom(2), 50, 0), Ok(30));
    // Domain 1's claim is honoured in full.
    assert_eq!(h.populate_physmap(dom(1), 80, 0), Ok(70));
    assert_eq!((h.free_pages(), h.outstanding_claims()), (0, 0));
    assert!(h.is_conserved());
}

#[test]
fn claim_rules_one_claim_zero_cancels_above_current_within_max_and_memory() {
    let mut h: HostMemory<2> = HostMemory::new(100);
    h.create_domain(dom(1), 60).unwrap();
    assert_eq!(h.populate_physmap(dom(1), 10, 0), Ok(10));
    let before = h.clone();
    assert_eq!(h.claim_pages(dom(1), 10), Err(ClaimError::NotAboveCurrent));
    assert_eq!(h.claim_pages(dom(1), 61), Err(ClaimError::AboveMax));
    assert_eq!(h.claim_pages(dom(9), 20), Err(ClaimError::NoSuchDomain));
    assert_eq!(h, before);
    h.claim_pages(dom(1), 50).unwrap();
    assert_eq!(h.claim_pages(dom(1), 55), Err(ClaimError::AlreadyClaimed));
    h.claim_pages(dom(1), 0).unwrap();
    assert_eq!(h.outstanding_claims(), 0);
    h.create_domain(dom(2), 200).unwrap();
    let refused = h.claim_pages(dom(2), 91).unwrap_err();
    assert_eq!(
        refused,
        ClaimError::OutOfMemory {
            needed: 91,
            available: 90
        }
    );
    // The hypercall's status: -ENOMEM here, -EINVAL for a malformed claim.
    assert_eq!(refused.errno(), -12);
    assert_eq!(ClaimError::AlreadyClaimed.errno(), -22);
}

#[test]
fn admission_without_the_memory_creates_nothing() {
    let mut h: HostMemory<2> = HostMemory::new(100);
    h.admit(dom(1), 80, 80).unwrap();
    let before = h.clone();
    assert!(matches!(
        h.admit(dom(2), 80, 30),
        Err(CreateError::Claim(ClaimError::OutOfMemory { .. }))
    ));
    assert_eq!(h, before);
    assert_eq!(h.admit(DomId::SELF, 1, 1), Err(CreateError::ReservedId));
}

#[test]
fn allocation_stops_at_max_pages_and_bad_ops_do_nothing() {
    let mut h: HostMemory<1> = HostMemory::new(4096);
    h.create_domain(dom(1), 1000).unwrap();
    assert_eq!(h.populate_physmap(dom(1), 10, 9), Ok(1));
    assert_eq!(h.increase_reservation(dom(1), u64::MAX >> 40, 0), Ok(488));
    let before = h.clone();
    assert_eq!(
        h.populate_physmap(dom(1), 1, 10),
        Err(ReservationError::ExtentOrderTooLarge { order: 10, max: 9 })
    );
    assert_eq!(
        h.populate_physmap(dom(1), u64::MAX, 0),
        Err(ReservationError::TooManyExtents)
    );
    assert_eq!(
        h.decrease_reservation(DomId::SELF, 1, 0),
        Err(ReservationError::NoSuchDomain)
    );
    assert_eq!(h, before);
    assert_eq!(h.decrease_reservation(dom(1), 5000, 0), Ok(1000));
    assert!(h.is_conserved());
}

fn bounds(n: u16, min: u64, max: u64) -> DomainBounds {
    DomainBounds {
        domid: dom(n),
        dynamic_min: min,
        dynamic_max: max,
    }
}

#[test]
fn the_policy_keeps_every_domain_within_its_dynamic_bounds() {
    let mut h: HostMemory<2> = HostMemory::new(1000);
    h.create_domain(dom(1), 1000).unwrap();
    let _ = h.populate_physmap(dom(1), 100, 0).unwrap();
    let mut t: Toolstack<2> = Toolstack::new(Mode::Reactive, 10);
    t.add_domain(bounds(1, 50, 300)).unwrap();
    t.observe(dom(1), 1).unwrap();
    assert_eq!(t.rebalance(&h).unwrap().target(dom(1)), Some(50));
    t.observe(dom(1), 10_000).unwrap();
    assert_eq!(t.rebalance(&h).unwrap().target(dom(1)), Some(300));
}

#[test]
fn the_squeeze_shares_the_pool_above_the_minima_in_proportion() {
    let mut h: HostMemory<2> = HostMemory::new(400);
    for n in [1, 2] {
        h.create_domain(dom(n), 1000).unwrap();
        let _ = h.populate_physmap(dom(n), 200, 0).unwrap();
    }
    let mut t: Toolstack<2> = Toolstack::new(Mode::Reactive, 0);
    t.add_domain(bounds(1, 100, 1000)).unwrap();
    t.add_domain(bounds(2, 100, 1000)).unwrap();
    t.observe(dom(1), 400).unwrap(); // wants 300 above its minimum
    t.observe(dom(2), 200).unwrap(); // wants 100 above its minimum
    let plan = t.rebalance(&h).unwrap();
    // 200 pages above the minima to share 3:1 -> 150 and 50; domain 1 can
    // only grow by what is free now (nothing), domain 2 shrinks at once.
    assert_eq!(plan.target(dom(2)), Some(150));
    assert_eq!(plan.target(dom(1)), Some(200));
    // Once domain 2 has given the pages back, domain 1 gets them.
    let _ = h.decrease_reservation(dom(2), 50, 0).unwrap();
    assert_eq!(t.rebalance(&h).unwrap().target(dom(1)), Some(250));
}

#[test]
fn growth_never_asks_for_more_than_the_unclaimed_free_memory() {
    let mut h: HostMemory<3> = HostMemory::new(300);
    for n in [1, 2] {
        h.create_domain(dom(n), 1000).unwrap();
        let _ = h.populate_physmap(dom(n), 100, 0).unwrap();
    }
    h.create_domain(dom(3), 100).unwrap();
    h.claim_pages(dom(3), 60).unwrap();
    let mut t: Toolstack<2> = Toolstack::new(Mode::Reactive, 0);
    t.add_domain(bounds(1, 10, 1000)).unwrap();
    t.add_domain(bounds(2, 10, 1000)).unwrap();
    t.observe(dom(1), 500).unwrap();
    t.observe(dom(2), 500).unwrap();
    let plan = t.rebalance(&h).unwrap();
    let growth: u64 = plan
        .iter()
        .map(|(d, t)| t.saturating_sub(h.current_reservation(d).unwrap()))
        .sum();
    assert_eq!(growth, 40);
}

#[test]
fn minima_above_the_pool_are_refused() {
    let mut h: HostMemory<2> = HostMemory::new(100);
    h.create_domain(dom(1), 100).unwrap();
    let mut t: Toolstack<2> = Toolstack::new(Mode::Reactive, 0);
    t.add_domain(bounds(1, 101, 200)).unwrap();
    assert_eq!(
        t.rebalance(&h),
        Err(RebalanceError::MinimaExceedPool {
            minima: 101,
            pool: 100
        })
    );
    t.add_domain(bounds(2, 1, 2)).unwrap();
    assert_eq!(
        t.rebalance(&h),
        Err(RebalanceError::NotOnHost { domid: dom(2) })
    );
}

#[test]
fn predictive_mode_moves_memory_ahead_of_a_rising_demand() {
    let mut h: HostMemory<1> = HostMemory::new(10_000);
    h.create_domain(dom(1), 10_000).unwrap();
    let _ = h.populate_physmap(dom(1), 100, 0).unwrap();
    let mut reactive: Toolstack<1, 4> = Toolstack::new(Mode::Reactive, 0);
    let mut predictive: Toolstack<1, 4> = Toolstack::new(Mode::Predictive { horizon: 2 }, 0);
    for t in [&mut reactive, &mut predictive] {
        t.add_domain(bounds(1, 0, 10_000)).unwrap();
        for demand in [100, 200, 300, 400] {
            t.observe(dom(1), demand).unwrap();
        }
    }
    assert_eq!(reactive.rebalance(&h).unwrap().target(dom(1)), Some(400));
    assert_eq!(predictive.rebalance(&h).unwrap().target(dom(1)), Some(600));
    // A falling demand is followed, never undercut.
    for demand in [300, 200, 100, 50] {
        predictive.observe(dom(1), demand).unwrap();
    }
    assert_eq!(predictive.rebalance(&h).unwrap().target(dom(1)), Some(50));
}

fn meminfo(committed: u64, totalram: u64) -> MemInfo {
    MemInfo {
        committed,
        reserve: 0,
        totalram,
        max_pfn: 1 << 20,
        frontswap: 0,
        balloon_current: totalram,
    }
}

#[test]
fn selfballoon_steps_down_an_eighth_of_the_excess_and_up_all_the_deficit() {
    let mut s = SelfBalloon::new(SelfBalloonConfig::linux()).unwrap();
    // A 4 GiB guest: the floor is 99 MiB + (4 GiB - 99 MiB) / 32.
    assert_eq!(
        s.tick(&meminfo(800_000, 1_000_000)).unwrap().target_pages,
        975_000
    );
    assert_eq!(
        s.tick(&meminfo(900_000, 800_000)).unwrap().target_pages,
        900_000
    );
    assert_eq!(s.tick(&meminfo(0, 100_000)).unwrap().target_pages, 87_500);
    assert_eq!(
        s.tick(&meminfo(0, 60_000)).unwrap().target_pages,
        25_344 + (1_048_576 - 25_344) / 32
    );
}

#[test]
fn selfballoon_never_balloons_a_guest_below_16_mib_of_useful_memory() {
    let mut s = SelfBalloon::new(SelfBalloonConfig::linux()).unwrap();
    let m = MemInfo {
        committed: 0,
        reserve: 0,
        totalram: 3000,
        max_pfn: 4000,
        frontswap: 0,
        balloon_current: 3000,
    };
    assert_eq!(s.tick(&m).unwrap().target_pages, 4000);
}

#[test]
fn frontswap_shrinks_by_a_twentieth_after_three_ticks_without_growth() {
    let mut config = SelfBalloonConfig::linux();
    config.min_usable_mb = 1;
    let mut s = SelfBalloon::new(config).unwrap();
    let mut m = meminfo(1000, 1000);
    m.frontswap = 400;
    let shrinks: Vec<_> = (0..5)
        .map(|_| s.tick(&m).unwrap().frontswap_shrink_to)
        .collect();
    assert_eq!(shrinks, [None, None, None, Some(380), None]);
    // The inertia counter is at 2 after the last tick.
    m.frontswap = 20;
    assert_eq!(s.tick(&m).unwrap().frontswap_shrink_to, None);
    assert_eq!(s.tick(&m).unwrap().frontswap_shrink_to, Some(0));
}

#[test]
fn selfballoon_refuses_figures_that_would_make_a_negative_target() {
    let mut s = SelfBalloon::new(SelfBalloonConfig::linux()).unwrap();
    let before = s;
    let m = MemInfo {
        committed: 10,
        reserve: 0,
        totalram: u64::MAX,
        max_pfn: 1,
        frontswap: 0,
        balloon_current: 0,
    };
    assert_eq!(s.tick(&m), Err(TickError::Inconsistent));
    assert_eq!(s, before);
}

#[derive(Clone, Debug)]
enum Op {
    Target(u64),
    Poll,
    Complete(i64),
    Abandon,
    Populate(u8, u64),
    Decrease(u8, u64),
    Claim(u8, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..600u64).prop_map(Op::Target),
        Just(Op::Poll),
        Just(Op::Poll),
        (-3..10i64).prop_map(Op::Complete),
        Just(Op::Abandon),
        (0..3u8, 0..40u64).prop_map(|(d, n)| Op::Populate(d, n)),
        (0..3u8, 0..40u64).prop_map(|(d, n)| Op::Decrease(d, n)),
        (0..3u8, 0..200u64).prop_map(|(d, n)| Op::Claim(d, n)),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        // Under miri each case costs minutes on a loaded 2-core machine; the
        // native test stage runs the 256.
        cases: if cfg!(miri) { 2 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// A guest driver wired to the hypervisor's books (its hypercalls go to
    /// a `HostMemory` that also serves two other domains and claims), under
    /// random targets, polls, completions, abandons and foreign traffic.
    /// After every step: the host conserves memory (`free + Σ tot = total`,
    /// claims within free), the driver's current pages equal its domain's
    /// `tot_pages` whenever no batch is in flight, every physmap frame is
    /// either the guest's, parked in the balloon or in the batch in flight
    /// (never two of these), no domain exceeds its `max_pages`, and a refused
    /// operation changes nothing.
    #[test]
    fn driver_and_hypervisor_books_agree_and_conserve_memory(ops in proptest::collection::vec(op(), 0..if cfg!(miri) { 6 } else { 80 })) {
        let mut host: HostMemory<3> = HostMemory::new(200);
        for n in 0..3 {
            host.create_domain(dom(n), 100).unwrap();
        }
        let _ = host.populate_physmap(dom(0), 48, 0).unwrap();
        let mut d = driver();
        let mut guest = FreeList::of(0..48);
        // The batch `poll` prepared: (populate?, frames); and what the host did.
        let mut pending: Option<(bool, u64)> = None;
        let mut issued: Option<i64> = None;
        for op in ops {
            let before = (d.clone(), host.clone());
            match op {
                Op::Target(kib) => {
                    if d.set_target_kib(kib).is_err() {
                        prop_assert_eq!(&d, &before.0);
                    }
                }
                Op::Poll => match d.poll(&mut guest) {
                    Ok(Step::Hypercall(r)) => {
                        pending = Some((r.op == MemoryOp::PopulatePhysmap, r.extents.len() as u64));
                        issued = None;
                    }
                    Ok(_) => {}
                    Err(_) => prop_assert_eq!(&d, &before.0),
                },
                Op::Complete(bias) => match (pending, issued) {
                    (Some(_), Some(rc)) if (0..7).contains(&bias) => {
                        let _ = d.complete(rc, &mut guest).unwrap();
                        (pending, issued) = (None, None);
                    }
                    (Some((_, n)), Some(rc)) => {
                        // A lying hypervisor: above the batch is refused.
                        let lie = n as i64 + bias;
                        if lie > n as i64 {
                            prop_assert!(d.complete(lie, &mut guest).is_err());
                            prop_assert_eq!(&d, &before.0);
                        }
                        let _ = rc;
                    }
                    (Some((populate, n)), None) => {
                        // The embedder makes the hypercall.
                        let done = if populate {
                            host.populate_physmap(dom(0), n, 0).unwrap()
                        } else {
                            host.decrease_reservation(dom(0), n, 0).unwrap()
                        };
                        issued = Some(done as i64);
                    }
                    (None, _) => {
                        prop_assert_eq!(d.complete(bias, &mut guest), Err(CompleteError::NoBatch));
                    }
                },
                Op::Abandon => {
                    if pending.is_some() && issued.is_none() {
                        d.abandon(&mut guest).unwrap();
                        pending = None;
                    } else if pending.is_none() {
                        prop_assert_eq!(d.abandon(&mut guest), Err(CompleteError::NoBatch));
                    }
                }
                Op::Populate(n, c) => { let _ = host.populate_physmap(dom(u16::from(n) + 1), c, 0); }
                Op::Decrease(n, c) => { let _ = host.decrease_reservation(dom(u16::from(n) + 1), c, 0); }
                Op::Claim(n, c) => {
                    if host.claim_pages(dom(u16::from(n)), c).is_err() {
                        prop_assert_eq!(&host, &before.1);
                    }
                }
            }
            prop_assert!(host.is_conserved());
            for dm in host.domains() {
                prop_assert!(dm.tot_pages <= dm.max_pages);
            }
            let in_flight: Vec<u64> = d.in_flight().unwrap_or(&[]).iter().map(|g| g.get()).collect();
            if pending.is_none() {
                prop_assert_eq!(d.current_pages(), host.current_reservation(dom(0)).unwrap());
            }
            for gfn in 0..64u64 {
                let owned = guest.0.contains(&gfn);
                let parked = d.is_ballooned(Gfn::new(gfn));
                let flying = in_flight.contains(&gfn);
                prop_assert!(u8::from(owned) + u8::from(parked) + u8::from(flying && !parked) == 1,
                    "frame {} owned {} parked {} in flight {}", gfn, owned, parked, flying);
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random bounds, demands, current sizes and a claim for three managed
    /// domains: every plan keeps each target at most its dynamic max; a
    /// domain that shrinks goes no lower than its dynamic min; the growth it
    /// asks for fits in the unclaimed free memory; the targets it aims at
    /// fit in the pool; and repeating the plan on a host where every guest
    /// reached its target converges to targets within the bounds.
    #[test]
    fn policy_plans_stay_within_bounds_and_the_host(
        spec in proptest::collection::vec((0..40u64, 0..40u64, 0..60u64, proptest::collection::vec(0..80u64, 0..6)), 3),
        claim in 0..20u64,
        predictive in any::<bool>(),
    ) {
        let mut host: HostMemory<4> = HostMemory::new(120);
        let mode = if predictive { Mode::Predictive { horizon: 2 } } else { Mode::Reactive };
        let mut t: Toolstack<3, 4> = Toolstack::new(mode, 2);
        for (i, (a, b, cur, demands)) in spec.iter().enumerate() {
            let (min, max) = (*a.min(b), *a.max(b));
            let id = dom(i as u16 + 1);
            host.create_domain(id, 1000).unwrap();
            let _ = host.populate_physmap(id, *cur, 0).unwrap();
            t.add_domain(bounds(i as u16 + 1, min, max)).unwrap();
            for &d in demands {
                t.observe(id, d).unwrap();
            }
        }
        host.create_domain(dom(9), 1000).unwrap();
        let _ = host.claim_pages(dom(9), claim);
        let minima: u64 = spec.iter().map(|(a, b, _, _)| *a.min(b)).sum();
        for _round in 0..6 {
            let pool = host.unclaimed_free_pages() + (1..=3).map(|i| host.current_reservation(dom(i)).unwrap()).sum::<u64>();
            let plan = match t.rebalance(&host) {
                Ok(plan) => plan,
                Err(RebalanceError::MinimaExceedPool { .. }) => {
                    prop_assert!(minima > pool);
                    return Ok(());
                }
                Err(e) => panic!("{e}"),
            };
            let mut growth = 0;
            for (i, (a, b, _, _)) in spec.iter().enumerate() {
                let (min, max) = (*a.min(b), *a.max(b));
                let id = dom(i as u16 + 1);
                let target = plan.target(id).unwrap();
                let cur = host.current_reservation(id).unwrap();
                prop_assert!(target <= max.max(cur.min(max)));
                if target < cur {
                    prop_assert!(target >= min);
                }
                growth += target.saturating_sub(cur);
            }
            prop_assert!(growth <= host.unclaimed_free_pages());
            // Every guest reaches its target.
            for (id, target) in plan.iter() {
                let cur = host.current_reservation(id).unwrap();
                if target > cur {
                    prop_assert_eq!(host.populate_physmap(id, target - cur, 0).unwrap(), target - cur);
                } else {
                    let _ = host.decrease_reservation(id, cur - target, 0).unwrap();
                }
            }
            prop_assert!(host.is_conserved());
        }
        for (i, (a, b, _, _)) in spec.iter().enumerate() {
            let cur = host.current_reservation(dom(i as u16 + 1)).unwrap();
            prop_assert!((*a.min(b)..=*a.max(b)).contains(&cur), "domain {} at {}", i + 1, cur);
        }
    }
}

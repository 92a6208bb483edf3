//! Hypervisor + toolstack + two ballooning guests + a domain being built on
//! a claim, every interleaving.
//!
//! Actors and their events:
//! - the toolstack rebalances (its plan becomes `memory/target` in
//!   xenstore, when it changes anything);
//! - each guest's xenstore watch fires; its balloon thread polls; the
//!   hypercall reaches the hypervisor's books; the result comes back;
//! - a domain admitted with a claim is populated a page at a time.

use std::vec::Vec;

use hvmem_types::{DomId, Gfn};
use stateright::{Model, Property};

use super::{assert_acyclic, check, has_successor, violations};
use crate::GuestPages;
use crate::xen::abi::{MemoryOp, pages_to_kib};
use crate::xen::domain::HostMemory;
use crate::xen::driver::{BalloonDriver, DriverConfig, GuestKind, Next, Step, Wake};
use crate::xen::toolstack::{DomainBounds, Mode, Toolstack};

const BUILDER: DomId = DomId::new(9);

/// The guest kernel's free frames, a bit each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Frames(u64);

impl GuestPages for Frames {
    fn alloc_page(&mut self) -> Option<Gfn> {
        if self.0 == 0 {
            return None;
        }
        let top = 63 - u64::from(self.0.leading_zeros());
        self.0 &= !(1 << top);
        Some(Gfn::new(top))
    }
    fn free_page(&mut self, gfn: Gfn) {
        assert!(self.0 & (1 << gfn.get()) == 0, "{gfn} freed twice");
        self.0 |= 1 << gfn.get();
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Guest {
    driver: BalloonDriver<[u64; 1], 2>,
    frames: Frames,
    /// The balloon thread will run (a wake-up or a back-off timer pending).
    awake: bool,
    /// The batch `poll` prepared: (populate?, extents).
    batch: Option<(bool, u64)>,
    /// What the hypervisor did with it.
    issued: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct State<const N: usize> {
    host: HostMemory<4>,
    guests: [Guest; N],
    /// A target written to xenstore whose watch has not fired.
    xenstore: [Option<u64>; N],
    /// The last target written, pages.
    written: [u64; N],
    /// Some machine refused an honest input.
    refused: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Action {
    Rebalance,
    Watch(usize),
    Poll(usize),
    Hypercall(usize),
    Complete(usize),
    Build,
}

/// A rule broken on purpose, to see the checker notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mutation {
    /// The hypervisor reports a decrease but keeps the pages.
    DecreaseLeaks,
    /// The toolstack hands out growth without checking free memory.
    UncappedGrowth,
    /// The balloon thread sleeps after every batch instead of running on
    /// while credit is left.
    StopsAfterABatch,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct GuestSpec {
    physmap: u64,
    populated: u64,
    min: u64,
    max: u64,
    demands: &'static [u64],
}

pub(super) struct XenModel<const N: usize> {
    total: u64,
    claim: u64,
    guests: [GuestSpec; N],
    toolstack: Toolstack<N, 4>,
    finals: [u64; N],
    mutation: Option<Mutation>,
}

fn domid(i: usize) -> DomId {
    DomId::new(i as u16 + 1)
}

impl<const N: usize> XenModel<N> {
    pub(super) fn new(
        total: u64,
        claim: u64,
        guests: [GuestSpec; N],
        mode: Mode,
        headroom: u64,
    ) -> Self {
        let mut toolstack = Toolstack::new(mode, headroom);
        for (i, g) in guests.iter().enumerate() {
            toolstack
                .add_domain(DomainBounds {
                    domid: domid(i),
                    dynamic_min: g.min,
                    dynamic_max: g.max,
                })
                .unwrap();
            for &d in g.demands {
                toolstack.observe(domid(i), d).unwrap();
            }
        }
        // The targets the policy settles on: its plan for a host where all
        // memory but the builder's claim is free, so no growth is capped.
        let mut empty: HostMemory<4> = HostMemory::new(total);
        for (i, g) in guests.iter().enumerate() {
            empty.create_domain(domid(i), g.max).unwrap();
        }
        empty.admit(BUILDER, claim, claim).unwrap();
        let plan = toolstack.rebalance(&empty).unwrap();
        let finals = core::array::from_fn(|i| plan.target(domid(i)).unwrap());
        Self {
            total,
            claim,
            guests,
            toolstack,
            finals,
            mutation: None,
        }
    }

    fn mutate(mut self, m: Mutation) -> Self {
        self.mutation = Some(m);
        self
    }

    fn converged(&self, s: &State<N>) -> bool {
        s.guests
            .iter()
            .zip(&self.finals)
            .all(|(g, &f)| g.driver.current_pages() == f && g.batch.is_none())
            && s.written == self.finals
            && s.xenstore == [None; N]
            && s.host.domain(BUILDER).is_some_and(|d| d.outstanding == 0)
    }
}

impl<const N: usize> Model for XenModel<N> {
    type State = State<N>;
    type Action = Action;

    fn init_states(&self) -> Vec<State<N>> {
        let mut host = HostMemory::new(self.total);
        let guests = core::array::from_fn(|i| {
            let g = self.guests[i];
            host.create_domain(domid(i), g.max).unwrap();
            assert_eq!(
                host.populate_physmap(domid(i), g.populated, 0),
                Ok(g.populated)
            );
            let config = DriverConfig::linux(
                GuestKind::Pv,
                g.physmap,
                g.populated,
                pages_to_kib(g.physmap).unwrap(),
            );
            Guest {
                driver: BalloonDriver::new(config, [0; 1]).unwrap(),
                frames: Frames((1 << g.populated) - 1),
                awake: false,
                batch: None,
                issued: None,
            }
        });
        host.admit(BUILDER, self.claim, self.claim).unwrap();
        let written = core::array::from_fn(|i| self.guests[i].populated);
        std::vec![State {
            host,
            guests,
            xenstore: [None; N],
            written,
            refused: false
        }]
    }

    fn actions(&self, _: &State<N>, actions: &mut Vec<Action>) {
        actions.push(Action::Rebalance);
        actions.push(Action::Build);
        for i in 0..N {
            actions.extend([
                Action::Watch(i),
                Action::Poll(i),
                Action::Hypercall(i),
                Action::Complete(i),
            ]);
        }
    }

    fn next_state(&self, last: &State<N>, action: Action) -> Option<State<N>> {
        let mut s = last.clone();
        match action {
            Action::Rebalance => {
                let Ok(plan) = self.toolstack.rebalance(&s.host) else {
                    s.refused = true;
                    return Some(s);
                };
                let mut changed = false;
                for i in 0..N {
                    let mut t = plan.target(domid(i))?;
                    if self.mutation == Some(Mutation::UncappedGrowth) {
                        t = self.finals[i];
                    }
                    if t != s.written[i] {
                        (s.written[i], s.xenstore[i], changed) = (t, Some(t), true);
                    }
                }
                changed.then_some(s)
            }
            Action::Watch(i) => {
                let t = s.xenstore[i].take()?;
                match s.guests[i].driver.set_target_kib(pages_to_kib(t)?) {
                    Ok(Wake::Now) => s.guests[i].awake = true,
                    Ok(Wake::NotYet) => {}
                    Err(_) => s.refused = true,
                }
                Some(s)
            }
            Action::Poll(i) => {
                let g = &mut s.guests[i];
                if !g.awake || g.batch.is_some() {
                    return None;
                }
                match g.driver.poll(&mut g.frames) {
                    Ok(Step::Hypercall(r)) => {
                        g.batch = Some((r.op == MemoryOp::PopulatePhysmap, r.extents.len() as u64))
                    }
                    Ok(Step::Idle) => g.awake = false,
                    Ok(Step::Sleep { .. }) => {}
                    Err(_) => s.refused = true,
                }
                Some(s)
            }
            Action::Hypercall(i) => {
                let (populate, n) = s.guests[i].batch?;
                if s.guests[i].issued.is_some() {
                    return None;
                }
                let done = if populate {
                    s.host.populate_physmap(domid(i), n, 0)
                } else if self.mutation == Some(Mutation::DecreaseLeaks) {
                    Ok(n)
                } else {
                    s.host.decrease_reservation(domid(i), n, 0)
                };
                match done {
                    Ok(done) => s.guests[i].issued = Some(done),
                    Err(_) => s.refused = true,
                }
                Some(s)
            }
            Action::Complete(i) => {
                let g = &mut s.guests[i];
                let rc = g.issued.take()?;
                g.batch = None;
                match g.driver.complete(rc as i64, &mut g.frames) {
                    Ok(Next::Now) => g.awake = self.mutation != Some(Mutation::StopsAfterABatch),
                    Ok(Next::Sleep { .. }) => g.awake = true,
                    Ok(Next::Idle) => g.awake = false,
                    Err(_) => s.refused = true,
                }
                Some(s)
            }
            Action::Build => {
                if s.host.domain(BUILDER)?.outstanding == 0 {
                    return None;
                }
                match s.host.populate_physmap(BUILDER, 1, 0) {
                    Ok(1) => {}
                    _ => s.refused = true,
                }
                Some(s)
            }
        }
    }

    fn properties(&self) -> Vec<Property<Self>> {
        std::vec![
            Property::always("memory is conserved", |m: &Self, s: &State<N>| {
                let books = s.host.is_conserved();
                let guests = s.guests.iter().enumerate().all(|(i, g)| {
                    // The driver's count, corrected by a hypercall the
                    // hypervisor did and the guest has not yet seen.
                    let seen = match (g.batch, g.issued) {
                        (Some((true, _)), Some(n)) => g.driver.current_pages() + n,
                        (Some((false, _)), Some(n)) => g.driver.current_pages() - n,
                        _ => g.driver.current_pages(),
                    };
                    let in_flight = if g.batch.is_some_and(|(populate, _)| !populate) {
                        g.driver.in_flight().map_or(0, <[Gfn]>::len) as u64
                    } else {
                        0
                    };
                    let owned = u64::from(g.frames.0.count_ones());
                    seen == s.host.current_reservation(domid(i)).unwrap()
                        && owned + g.driver.ballooned_pages() + in_flight == m.guests[i].physmap
                });
                books && guests
            }),
            Property::always(
                "no domain above its max, claims within free memory",
                |_: &Self, s: &State<N>| {
                    s.host.domains().all(|d| d.tot_pages <= d.max_pages)
                        && s.host.outstanding_claims() <= s.host.free_pages()
                }
            ),
            Property::always(
                "the toolstack never promises more than the host has",
                |_: &Self, s: &State<N>| {
                    let promised: u64 = (0..N)
                        .map(|i| {
                            s.written[i]
                                .saturating_sub(s.host.current_reservation(domid(i)).unwrap())
                        })
                        .sum();
                    promised <= s.host.unclaimed_free_pages()
                }
            ),
            Property::always(
                "no machine refuses an honest input",
                |_: &Self, s: &State<N>| !s.refused
            ),
            Property::always(
                "settled domains are within their dynamic bounds",
                |m: &Self, s: &State<N>| {
                    !m.converged(s)
                        || s.guests.iter().zip(&m.guests).all(|(g, spec)| {
                            (spec.min..=spec.max).contains(&g.driver.current_pages())
                        })
                }
            ),
            Property::always(
                "no deadlock: every final state is converged",
                |m: &Self, s: &State<N>| { has_successor(m, s) || m.converged(s) }
            ),
            Property::eventually(
                "every domain reaches its target",
                |m: &Self, s: &State<N>| m.converged(s)
            ),
        ]
    }
}

/// Guest A shrinks, guest B grows, the builder populates its claim.
fn reactive() -> XenModel<2> {
    XenModel::new(
        16,
        2,
        [
            GuestSpec {
                physmap: 10,
                populated: 8,
                min: 2,
                max: 10,
                demands: &[2],
            },
            GuestSpec {
                physmap: 10,
                populated: 4,
                min: 2,
                max: 10,
                demands: &[7],
            },
        ],
        Mode::Reactive,
        1,
    )
}

/// Demand trends: the forecasts exceed the pool, so the policy squeezes.
fn predictive() -> XenModel<2> {
    XenModel::new(
        12,
        2,
        [
            GuestSpec {
                physmap: 8,
                populated: 6,
                min: 2,
                max: 8,
                demands: &[6, 5, 4, 3],
            },
            GuestSpec {
                physmap: 8,
                populated: 2,
                min: 2,
                max: 8,
                demands: &[2, 3, 4, 5],
            },
        ],
        Mode::Predictive { horizon: 1 },
        1,
    )
}

/// Three guests on 14 pages and a claim of 2: one shrinks, two grow.
fn three_guests() -> XenModel<3> {
    XenModel::new(
        14,
        2,
        [
            GuestSpec {
                physmap: 8,
                populated: 7,
                min: 1,
                max: 8,
                demands: &[1],
            },
            GuestSpec {
                physmap: 6,
                populated: 2,
                min: 1,
                max: 6,
                demands: &[4],
            },
            GuestSpec {
                physmap: 6,
                populated: 2,
                min: 1,
                max: 6,
                demands: &[5],
            },
        ],
        Mode::Reactive,
        0,
    )
}

#[test]
fn the_policy_settles_on_targets_that_fit_the_pool() {
    assert_eq!(reactive().finals, [3, 8]);
    // Wants 4 and 7 (forecast 6 + 1) exceed the pool of 10: squeezed 3:6.
    assert_eq!(predictive().finals, [3, 6]);
    assert_eq!(three_guests().finals, [1, 4, 5]);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "exhaustive exploration is too slow under the interpreter; runs in the normal test stage"
)]
fn xen_three_guests_conserve_memory_and_converge_in_every_interleaving() {
    let model = three_guests();
    let states = assert_acyclic(&model);
    assert_eq!(
        check("xen reactive, 3 guests + claim, 14 pages", model),
        states
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "exhaustive exploration is too slow under the interpreter; runs in the normal test stage"
)]
fn xen_reactive_policy_conserves_memory_and_converges_in_every_interleaving() {
    let model = reactive();
    let states = assert_acyclic(&model);
    assert_eq!(
        check("xen reactive, 2 guests + claim, 16 pages", model),
        states
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "exhaustive exploration is too slow under the interpreter; runs in the normal test stage"
)]
fn xen_predictive_policy_conserves_memory_and_converges_in_every_interleaving() {
    let model = predictive();
    let states = assert_acyclic(&model);
    assert_eq!(
        check("xen predictive, 2 guests + claim, 12 pages", model),
        states
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "exhaustive exploration is too slow under the interpreter; runs in the normal test stage"
)]
fn the_xen_checks_catch_a_leak_uncapped_growth_and_a_driver_that_stops_early() {
    assert!(
        violations(reactive().mutate(Mutation::DecreaseLeaks)).contains(&"memory is conserved")
    );
    assert!(
        violations(reactive().mutate(Mutation::UncappedGrowth))
            .contains(&"the toolstack never promises more than the host has")
    );
    let stuck = violations(reactive().mutate(Mutation::StopsAfterABatch));
    assert!(
        stuck.contains(&"no deadlock: every final state is converged"),
        "{stuck:?}"
    );
    assert!(
        stuck.contains(&"every domain reaches its target"),
        "{stuck:?}"
    );
}

//! A virtio balloon device and driver pair, with a host that changes the
//! target and a guest that runs out of memory, every interleaving.
//!
//! Actors and their events: the host writes `num_pages` (a bounded number
//! of times); the driver takes the config interrupt, polls, and takes the
//! device's ack (then writes `actual`); the device serves the queued
//! request; the guest hits memory pressure (DEFLATE_ON_OOM, bounded).

use std::vec::Vec;

use hvmem_types::Gfn;
use stateright::{Model, Property};

use super::{assert_acyclic, check, has_successor, violations};
use crate::GuestPages;
use crate::virtio::device::{BalloonDevice, DeviceConfig, HostAction};
use crate::virtio::driver::{BalloonDriver, DriverStep};
use crate::virtio::features::{Features, GuestPoisoning};

/// The guest kernel's free pages, by first 4 KiB frame, a bit each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Frames {
    free: u64,
    /// 4 KiB frames per guest page.
    per: u64,
}

impl GuestPages for Frames {
    fn alloc_page(&mut self) -> Option<Gfn> {
        if self.free == 0 {
            return None;
        }
        let first = u64::from(self.free.trailing_zeros());
        self.free &= !(((1u64 << self.per) - 1) << first);
        Some(Gfn::new(first))
    }
    fn free_page(&mut self, gfn: Gfn) {
        let mask = ((1u64 << self.per) - 1) << gfn.get();
        assert!(self.free & mask == 0, "{gfn} freed twice");
        self.free |= mask;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Request {
    inflate: bool,
    bytes: Vec<u8>,
    /// The device has used the buffer.
    used: bool,
    /// The driver took the pages back already (a mutation).
    acked: bool,
}

impl Request {
    fn pfns(&self) -> impl Iterator<Item = u64> + '_ {
        self.bytes
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct State {
    dev: BalloonDevice<[u64; 1]>,
    drv: BalloonDriver<[u64; 1]>,
    guest: Frames,
    request: Option<Request>,
    config_irq: bool,
    awake: bool,
    target_changes_left: u8,
    ooms_left: u8,
    refused: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Action {
    SetTarget(u32),
    ConfigInterrupt,
    Poll,
    DeviceServes,
    Ack,
    Oom,
}

/// A rule broken on purpose, to see the checker notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mutation {
    /// The driver reuses deflated pages before the device has seen the
    /// deflate (ignoring MUST_TELL_HOST).
    ReuseBeforeAck,
    /// The driver never reads a config change.
    DeafDriver,
}

pub(super) struct VirtioModel {
    guest_pages: u64,
    guest_page_shift: u32,
    host_page_shift: u32,
    features: Features,
    targets: &'static [u32],
    target_changes: u8,
    ooms: u8,
    mutation: Option<Mutation>,
}

impl VirtioModel {
    fn mutate(mut self, m: Mutation) -> Self {
        self.mutation = Some(m);
        self
    }

    fn converged(s: &State) -> bool {
        let target = u64::from(s.dev.num_pages());
        s.target_changes_left == 0
            && s.request.is_none()
            && !s.config_irq
            && s.dev.inflated_pages() == target
            && u64::from(s.dev.actual()) == target
            && u64::from(s.drv.actual()) == target
    }
}

impl Model for VirtioModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let config = DeviceConfig {
            offered: self.features,
            guest_pages: self.guest_pages,
            host_page_shift: self.host_page_shift,
            require_must_tell_host: true,
            first_hint_id: 2,
            legacy_big_endian: false,
        };
        let mut dev = BalloonDevice::new(config, [0; 1], [0; 1]).unwrap();
        let drv = BalloonDriver::new(
            self.features,
            GuestPoisoning {
                poisons_free_pages: false,
            },
            0,
            self.guest_pages,
            self.guest_page_shift,
            [0; 1],
        )
        .unwrap();
        dev.negotiate(drv.features()).unwrap();
        dev.driver_ok().unwrap();
        std::vec![State {
            dev,
            drv,
            guest: Frames {
                free: (1 << self.guest_pages) - 1,
                per: 1 << (self.guest_page_shift - 12)
            },
            request: None,
            config_irq: false,
            awake: false,
            target_changes_left: self.target_changes,
            ooms_left: self.ooms,
            refused: false,
        }]
    }

    fn actions(&self, _: &State, actions: &mut Vec<Action>) {
        actions.extend(self.targets.iter().map(|&t| Action::SetTarget(t)));
        actions.extend([
            Action::ConfigInterrupt,
            Action::Poll,
            Action::DeviceServes,
            Action::Ack,
            Action::Oom,
        ]);
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::SetTarget(t) => {
                if s.target_changes_left == 0 || s.dev.num_pages() == t {
                    return None;
                }
                s.target_changes_left -= 1;
                match s.dev.set_num_pages(t) {
                    Ok(HostAction::ConfigChanged) => s.config_irq = true,
                    _ => s.refused = true,
                }
            }
            Action::ConfigInterrupt => {
                if !s.config_irq {
                    return None;
                }
                s.config_irq = false;
                if self.mutation != Some(Mutation::DeafDriver) {
                    s.drv.config_changed(s.dev.num_pages());
                    s.awake = true;
                }
            }
            Action::Poll => {
                if !s.awake || s.request.is_some() {
                    return None;
                }
                match s.drv.poll(&mut s.guest) {
                    Ok(DriverStep::Inflate(b)) => {
                        s.request = Some(Request {
                            inflate: true,
                            bytes: b.to_vec(),
                            used: false,
                            acked: false,
                        })
                    }
                    Ok(DriverStep::Deflate(b)) => {
                        s.request = Some(Request {
                            inflate: false,
                            bytes: b.to_vec(),
                            used: false,
                            acked: false,
                        })
                    }
                    Ok(DriverStep::Idle) => s.awake = false,
                    Ok(DriverStep::OutOfPuff) | Err(_) => s.refused = true,
                }
            }
            Action::Oom => {
                if s.ooms_left == 0 || s.request.is_some() || s.drv.actual() == 0 {
                    return None;
                }
                s.ooms_left -= 1;
                match s.drv.oom() {
                    Ok(DriverStep::Deflate(b)) => {
                        s.request = Some(Request {
                            inflate: false,
                            bytes: b.to_vec(),
                            used: false,
                            acked: false,
                        })
                    }
                    _ => s.refused = true,
                }
            }
            Action::DeviceServes => {
                let request = s.request.as_mut()?;
                if request.used {
                    return None;
                }
                request.used = true;
                let result = if request.inflate {
                    s.dev.inflate(&request.bytes, |_| {})
                } else {
                    s.dev.deflate(&request.bytes, |_| {})
                };
                s.refused |= result.is_err();
                if request.acked {
                    s.request = None;
                }
            }
            Action::Ack => {
                let request = s.request.as_mut()?;
                let early = self.mutation == Some(Mutation::ReuseBeforeAck)
                    && !request.inflate
                    && !request.acked;
                if request.used {
                    s.request = None;
                } else if early {
                    // The mutated driver takes its pages back now; the
                    // device serves the buffer later.
                    request.acked = true;
                } else {
                    return None;
                }
                match s.drv.ack(&mut s.guest) {
                    Ok(actual) => {
                        s.refused |= s.dev.write_config(4, &actual.0.to_le_bytes()).is_err()
                    }
                    Err(_) => s.refused = true,
                }
                s.awake = true;
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        std::vec![
            Property::always(
                "every guest page is the guest's, the balloon's, or in one request",
                |m: &Self, s: &State| {
                    let in_request = s
                        .request
                        .as_ref()
                        .filter(|r| !r.acked)
                        .map_or(0, |r| r.bytes.len() as u64 / 4);
                    let free = u64::from(s.guest.free.count_ones());
                    let balloon = u64::from(s.drv.actual());
                    let taken_for_inflate = if s.request.as_ref().is_some_and(|r| r.inflate) {
                        in_request
                    } else {
                        0
                    };
                    let deflating = if s.request.as_ref().is_some_and(|r| !r.inflate) {
                        in_request
                    } else {
                        0
                    };
                    // Pages being deflated are still counted by the driver's balloon.
                    free + balloon + taken_for_inflate == m.guest_pages && deflating <= balloon
                }
            ),
            Property::always(
                "the device's pages are the driver's balloon, give or take the served request",
                |m: &Self, s: &State| {
                    (0..m.guest_pages).all(|p| {
                        let page =
                            Gfn::new(p >> (m.guest_page_shift - 12) << (m.guest_page_shift - 12));
                        let mut expect = s.drv.is_ballooned(page);
                        if let Some(r) = s.request.as_ref().filter(|r| r.used || r.acked) {
                            if r.pfns().any(|q| q == p) {
                                expect = r.inflate;
                            }
                        }
                        s.dev.is_inflated(p) == expect
                    })
                }
            ),
            Property::always(
                "the guest never owns a discarded page",
                |m: &Self, s: &State| {
                    (0..m.guest_pages)
                        .all(|p| s.guest.free & (1 << p) == 0 || !s.dev.is_discarded(p))
                }
            ),
            Property::always(
                "no machine refuses an honest input",
                |_: &Self, s: &State| !s.refused
            ),
            Property::always(
                "no deadlock: every final state is converged",
                |m: &Self, s: &State| { has_successor(m, s) || Self::converged(s) }
            ),
            Property::eventually(
                "the balloon reaches the host's target",
                |_: &Self, s: &State| Self::converged(s)
            ),
        ]
    }
}

/// 4 KiB guest pages on 8 KiB host pages, MUST_TELL_HOST and
/// DEFLATE_ON_OOM, four target changes among 0, 3, 5 and 8 pages.
fn small_pages() -> VirtioModel {
    VirtioModel {
        guest_pages: 8,
        guest_page_shift: 12,
        host_page_shift: 13,
        features: Features::MUST_TELL_HOST | Features::DEFLATE_ON_OOM | Features::VERSION_1,
        targets: &[0, 3, 5, 8],
        target_changes: 4,
        ooms: 2,
        mutation: None,
    }
}

/// 16 KiB guest pages (targets rounded up) on 32 KiB host pages.
fn large_pages() -> VirtioModel {
    VirtioModel {
        guest_pages: 16,
        guest_page_shift: 14,
        host_page_shift: 15,
        features: Features::MUST_TELL_HOST | Features::DEFLATE_ON_OOM,
        targets: &[0, 8, 16],
        target_changes: 3,
        ooms: 1,
        mutation: None,
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "exhaustive exploration is too slow under the interpreter; runs in the normal test stage"
)]
fn virtio_pair_with_small_pages_conserves_pages_and_converges_in_every_interleaving() {
    let model = small_pages();
    let states = assert_acyclic(&model);
    assert_eq!(
        check("virtio 4K guest / 8K host pages, 8 pages", model),
        states
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "exhaustive exploration is too slow under the interpreter; runs in the normal test stage"
)]
fn virtio_pair_with_large_pages_conserves_pages_and_converges_in_every_interleaving() {
    let model = large_pages();
    let states = assert_acyclic(&model);
    assert_eq!(
        check("virtio 16K guest / 32K host pages, 16 pages", model),
        states
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "exhaustive exploration is too slow under the interpreter; runs in the normal test stage"
)]
fn the_virtio_checks_catch_early_reuse_and_a_deaf_driver() {
    let early = violations(small_pages().mutate(Mutation::ReuseBeforeAck));
    assert!(
        early.contains(&"the guest never owns a discarded page"),
        "{early:?}"
    );
    let deaf = violations(small_pages().mutate(Mutation::DeafDriver));
    assert!(
        deaf.contains(&"the balloon reaches the host's target"),
        "{deaf:?}"
    );
    assert!(
        deaf.contains(&"no deadlock: every final state is converged"),
        "{deaf:?}"
    );
}

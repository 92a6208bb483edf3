//! A toolstack policy that shares a host's memory among domains, each within
//! its dynamic minimum and maximum (Citrix Dynamic Memory Control), driven by
//! demand signals.
//!
//! # Protocol
//!
//! The toolstack manages some domains of a [`HostMemory`]. The *pool* is the
//! memory those domains hold plus the free memory nobody has claimed. Each
//! [`Toolstack::rebalance`]:
//!
//! 1. **Wants.** For each domain, `want = clamp(demand + headroom,
//!    dynamic_min, dynamic_max)`. The demand is the last signal
//!    ([`Mode::Reactive`]), or the larger of it and a forecast `horizon`
//!    samples ahead, a least-squares line through the recent history
//!    ([`Mode::Predictive`]), so memory moves to a growing domain before it
//!    needs it. A domain without a signal wants what it has.
//! 2. **Squeeze.** If the wants exceed the pool, every domain gets its
//!    minimum and the rest of the pool is shared in proportion to what each
//!    wants above its minimum (rounded down). If even the minima exceed the
//!    pool, the plan is refused.
//! 3. **Never more than the host has.** Shrinking domains get their final
//!    target at once. Growing domains get, in slot order, only what the
//!    unclaimed free memory covers *now*; what the shrinking domains give
//!    back is handed out by later rounds. So after every plan, `Σ
//!    max(0, target - current) <= unclaimed free`: every balloon can reach
//!    its target, and no promise depends on another guest's cooperation.
//!
//! Repeated rounds converge: with constant demand, each round either moves
//! every domain to its final target or hands all free memory to growing
//! domains, and shrinking domains only add to it.

use core::fmt;

use hvmem_types::DomId;

use crate::xen::domain::HostMemory;

/// A domain's place in the policy, in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DomainBounds {
    /// The domain.
    pub domid: DomId,
    /// The least it is ever asked to shrink to.
    pub dynamic_min: u64,
    /// The most it is ever given.
    pub dynamic_max: u64,
}

/// How demand is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The last demand signal.
    Reactive,
    /// The larger of the last signal and a linear forecast `horizon`
    /// samples ahead.
    Predictive {
        /// Samples ahead.
        horizon: u32,
    },
}

/// Why a domain could not be put under the policy. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddDomainError {
    /// `dynamic_min > dynamic_max`.
    MinAboveMax,
    /// The domain is managed already.
    Exists,
    /// Every slot is in use.
    NoSlot,
}

impl fmt::Display for AddDomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MinAboveMax => f.write_str("dynamic min is above dynamic max"),
            Self::Exists => f.write_str("the domain is managed already"),
            Self::NoSlot => f.write_str("every slot is in use"),
        }
    }
}
impl core::error::Error for AddDomainError {}

/// Why a demand signal was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObserveError {
    /// The domain is not managed.
    NoSuchDomain,
}

impl fmt::Display for ObserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchDomain => f.write_str("the domain is not managed"),
        }
    }
}
impl core::error::Error for ObserveError {}

/// Why no plan could be made. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RebalanceError {
    /// A managed domain does not exist on the host.
    NotOnHost {
        /// The domain.
        domid: DomId,
    },
    /// The dynamic minima alone exceed the pool.
    MinimaExceedPool {
        /// Σ dynamic_min.
        minima: u64,
        /// The pool.
        pool: u64,
    },
}

impl fmt::Display for RebalanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOnHost { domid } => write!(f, "managed domain {domid:?} is not on the host"),
            Self::MinimaExceedPool { minima, pool } => {
                write!(
                    f,
                    "the dynamic minima ({minima} pages) exceed the pool ({pool} pages)"
                )
            }
        }
    }
}
impl core::error::Error for RebalanceError {}

/// New balloon targets, one per managed domain, in pages.
///
/// The plan does not change any domain's `max_pages`. Before writing a
/// larger target to a domain's `memory/target`, raise its `max_pages`
/// ([`HostMemory::set_max_pages`]) to at least the target, as Xen's
/// toolstack does; otherwise the guest's populate calls stop at the old
/// limit. The target is in pages; xenstore wants KiB
/// ([`pages_to_kib`](crate::xen::abi::pages_to_kib)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub struct Plan<const DOMAINS: usize> {
    targets: [Option<(DomId, u64)>; DOMAINS],
}

impl<const DOMAINS: usize> Plan<DOMAINS> {
    /// `(domain, target pages)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (DomId, u64)> + '_ {
        self.targets.iter().flatten().copied()
    }

    /// One domain's target.
    #[must_use]
    pub fn target(&self, domid: DomId) -> Option<u64> {
        self.iter().find(|&(d, _)| d == domid).map(|(_, t)| t)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Managed<const HISTORY: usize> {
    bounds: DomainBounds,
    /// A ring of the last `len` demand samples; `next` is the oldest.
    history: [u64; HISTORY],
    len: usize,
    next: usize,
}

impl<const HISTORY: usize> Managed<HISTORY> {
    fn samples(&self) -> impl Iterator<Item = u64> + '_ {
        let (newer, older) = self.history.split_at(self.next.min(HISTORY));
        older
            .iter()
            .chain(newer)
            .copied()
            .skip(HISTORY - self.len.min(HISTORY))
    }

    fn last(&self) -> Option<u64> {
        self.samples().last()
    }

    /// The least-squares line through the samples, `horizon` steps past the
    /// last one; `None` without samples. Integer arithmetic: with centred
    /// abscissae `X = 2i - (n - 1)`, `Σ X = 0`, so the line is
    /// `mean + X_f * ΣXy / ΣX²` and `X_f = (n - 1) + 2 * horizon`.
    fn forecast(&self, horizon: u32) -> Option<u64> {
        let n = self.len.min(HISTORY) as i128;
        if n == 0 {
            return None;
        }
        let (mut sum_y, mut sxy, mut sxx) = (0i128, 0i128, 0i128);
        for (i, y) in self.samples().enumerate() {
            let x = 2 * i as i128 - (n - 1);
            sum_y += i128::from(y);
            sxy += x * i128::from(y);
            sxx += x * x;
        }
        if sxx == 0 {
            return Some(u64::try_from(sum_y / n).unwrap_or(u64::MAX));
        }
        let xf = (n - 1) + 2 * i128::from(horizon);
        let y = (sum_y * sxx + n * xf * sxy) / (n * sxx);
        Some(u64::try_from(y.max(0)).unwrap_or(u64::MAX))
    }
}

/// The policy for up to `DOMAINS` domains, keeping `HISTORY` demand samples
/// each.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Toolstack<const DOMAINS: usize, const HISTORY: usize = 8> {
    mode: Mode,
    headroom: u64,
    domains: [Option<Managed<HISTORY>>; DOMAINS],
}

impl<const DOMAINS: usize, const HISTORY: usize> Toolstack<DOMAINS, HISTORY> {
    /// A policy reading demand as `mode` says and giving each domain
    /// `headroom` pages above its demand.
    #[must_use]
    pub const fn new(mode: Mode, headroom: u64) -> Self {
        Self {
            mode,
            headroom,
            domains: [None; DOMAINS],
        }
    }

    /// Puts a domain under the policy.
    ///
    /// # Errors
    ///
    /// Every [`AddDomainError`] variant.
    pub fn add_domain(&mut self, bounds: DomainBounds) -> Result<(), AddDomainError> {
        if bounds.dynamic_min > bounds.dynamic_max {
            return Err(AddDomainError::MinAboveMax);
        }
        if self.managed(bounds.domid).is_some() {
            return Err(AddDomainError::Exists);
        }
        let slot = self
            .domains
            .iter_mut()
            .find(|d| d.is_none())
            .ok_or(AddDomainError::NoSlot)?;
        *slot = Some(Managed {
            bounds,
            history: [0; HISTORY],
            len: 0,
            next: 0,
        });
        Ok(())
    }

    /// Takes a domain out of the policy.
    ///
    /// # Errors
    ///
    /// [`ObserveError::NoSuchDomain`].
    pub fn remove_domain(&mut self, domid: DomId) -> Result<(), ObserveError> {
        let slot = self
            .domains
            .iter_mut()
            .find(|d| d.is_some_and(|m| m.bounds.domid == domid))
            .ok_or(ObserveError::NoSuchDomain)?;
        *slot = None;
        Ok(())
    }

    fn managed(&self, domid: DomId) -> Option<&Managed<HISTORY>> {
        self.domains
            .iter()
            .flatten()
            .find(|m| m.bounds.domid == domid)
    }

    /// A demand signal: the pages `domid` needs now (from its balloon
    /// statistics, e.g. total minus available memory, or tmem pressure).
    /// The value is the guest's word: it only ever moves the domain within
    /// its bounds.
    ///
    /// # Errors
    ///
    /// [`ObserveError::NoSuchDomain`].
    pub fn observe(&mut self, domid: DomId, demand_pages: u64) -> Result<(), ObserveError> {
        let m = self
            .domains
            .iter_mut()
            .flatten()
            .find(|m| m.bounds.domid == domid)
            .ok_or(ObserveError::NoSuchDomain)?;
        if let Some(slot) = m.history.get_mut(m.next) {
            *slot = demand_pages;
        }
        m.next = (m.next + 1) % HISTORY.max(1);
        m.len = (m.len + 1).min(HISTORY);
        Ok(())
    }

    /// What a domain wants, before the squeeze.
    fn want(&self, m: &Managed<HISTORY>, current: u64) -> u64 {
        let demand = match (self.mode, m.last()) {
            (_, None) => return current.clamp(m.bounds.dynamic_min, m.bounds.dynamic_max),
            (Mode::Reactive, Some(last)) => last,
            (Mode::Predictive { horizon }, Some(last)) => {
                m.forecast(horizon).map_or(last, |f| f.max(last))
            }
        };
        demand
            .saturating_add(self.headroom)
            .clamp(m.bounds.dynamic_min, m.bounds.dynamic_max)
    }

    /// The next round of targets for the managed domains of `host`.
    ///
    /// # Errors
    ///
    /// [`RebalanceError::NotOnHost`], [`RebalanceError::MinimaExceedPool`].
    pub fn rebalance<const N: usize>(
        &self,
        host: &HostMemory<N>,
    ) -> Result<Plan<DOMAINS>, RebalanceError> {
        let mut current = [0u64; DOMAINS];
        let mut want = [0u64; DOMAINS];
        let (mut pool, mut minima, mut wanted) =
            (u128::from(host.unclaimed_free_pages()), 0u128, 0u128);
        for ((slot, cur), w) in self.domains.iter().zip(&mut current).zip(&mut want) {
            let Some(m) = slot else { continue };
            let d = host
                .domain(m.bounds.domid)
                .ok_or(RebalanceError::NotOnHost {
                    domid: m.bounds.domid,
                })?;
            *cur = d.tot_pages;
            *w = self.want(m, d.tot_pages);
            pool += u128::from(d.tot_pages);
            minima += u128::from(m.bounds.dynamic_min);
            wanted += u128::from(*w);
        }
        if minima > pool {
            return Err(RebalanceError::MinimaExceedPool {
                minima: u64::try_from(minima).unwrap_or(u64::MAX),
                pool: u64::try_from(pool).unwrap_or(u64::MAX),
            });
        }
        if wanted > pool {
            let extra = pool - minima;
            let above = wanted - minima;
            for (slot, w) in self.domains.iter().zip(&mut want) {
                let Some(m) = slot else { continue };
                let min = u128::from(m.bounds.dynamic_min);
                let share = (u128::from(*w) - min) * extra / above;
                *w = u64::try_from(min + share).unwrap_or(u64::MAX);
            }
        }
        let mut budget = host.unclaimed_free_pages();
        let mut plan = Plan {
            targets: [None; DOMAINS],
        };
        for (((slot, out), &cur), &w) in self
            .domains
            .iter()
            .zip(&mut plan.targets)
            .zip(&current)
            .zip(&want)
        {
            let Some(m) = slot else { continue };
            let target = if w <= cur {
                w
            } else {
                let grow = (w - cur).min(budget);
                budget -= grow;
                cur + grow
            };
            *out = Some((m.bounds.domid, target));
        }
        Ok(plan)
    }
}

//! The hypervisor's per-domain memory accounting: current pages, max pages
//! and outstanding claims, as Xen keeps them in `struct domain` and the heap.
//!
//! # Protocol
//!
//! The host has `total` pages for guests. Each page is free or belongs to
//! exactly one domain, so `free + Σ tot_pages = total` after every call
//! (the conservation invariant; [`HostMemory::is_conserved`] checks it).
//!
//! - **Max pages.** An allocation that would take a domain above its
//!   `max_pages` fails (`assign_pages`). The toolstack may set `max_pages`
//!   below the current size; the domain then only shrinks.
//! - **Claims** (`XENMEM_claim_pages`, Xen's `domain_set_outstanding_pages`).
//!   A claim names the total a domain will reach; it stakes
//!   `pages - tot_pages` free pages as outstanding. One claim per domain; a
//!   claim of 0 cancels; a claim must exceed the current size, must not
//!   exceed `max_pages`, and must fit in `free - outstanding_claims`. Each
//!   page the domain is given shrinks its claim. Any other allocation fails
//!   if it would eat into claimed memory: it succeeds only if `claims +
//!   request <= free`, or the requesting domain's own claim covers the
//!   request. So `outstanding_claims <= free` always holds, and a domain
//!   admitted with [`HostMemory::admit`] is guaranteed its memory.
//! - **Reservation ops.** `populate_physmap` and `increase_reservation`
//!   allocate extent by extent and stop at the first failure, returning the
//!   count done; `decrease_reservation` frees extent by extent. A whole op
//!   is refused, with nothing done, for an unknown or reserved domain id,
//!   an extent order above the domU limit, or too many extents.
//!
//! # Differences from Xen
//!
//! - For an extent order above the limit, or more than
//!   [`MAX_NR_EXTENTS`] extents, Xen does
//!   not fail the hypercall: it returns 0 extents done. Here these are
//!   errors ([`ReservationError::ExtentOrderTooLarge`],
//!   [`ReservationError::TooManyExtents`]). To answer a guest as Xen does,
//!   return 0 for them.
//! - The order limit is the x86 domU one,
//!   [`DOMU_MAX_EXTENT_ORDER`] (9),
//!   for every domain. Xen allows the control and hardware domains larger
//!   orders.
//!
//! Which frames move is the embedder's business (a buddy heap and a frame
//! table in `hvmem-sim`): this machine decides how many, and keeps the books.

use core::fmt;

use hvmem_types::DomId;

use crate::xen::abi::{DOMU_MAX_EXTENT_ORDER, MAX_NR_EXTENTS};

/// One domain's books.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DomainMemory {
    /// The domain.
    pub domid: DomId,
    /// Pages it holds (`domain_tot_pages`).
    pub tot_pages: u64,
    /// The most it may hold (`max_pages`).
    pub max_pages: u64,
    /// Pages claimed for it and not yet given (`outstanding_pages`).
    pub outstanding: u64,
}

/// Why a domain could not be created or admitted. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateError {
    /// The id is one of the ABI's reserved values.
    ReservedId,
    /// A domain with this id exists.
    Exists,
    /// Every domain slot is in use.
    NoSlot,
    /// The claim that admission needs was refused.
    Claim(ClaimError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedId => f.write_str("the domain id is reserved"),
            Self::Exists => f.write_str("the domain exists"),
            Self::NoSlot => f.write_str("every domain slot is in use"),
            Self::Claim(e) => write!(f, "admission claim refused: {e}"),
        }
    }
}
impl core::error::Error for CreateError {}

/// Why an operation named a domain that cannot be used. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DomainError {
    /// No such domain.
    NoSuchDomain,
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchDomain => f.write_str("no such domain"),
        }
    }
}
impl core::error::Error for DomainError {}

/// Why `XENMEM_claim_pages` was refused (Xen's `-EINVAL` / `-ENOMEM`).
/// Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimError {
    /// No such domain.
    NoSuchDomain,
    /// The domain has a claim already; cancel it with a claim of 0 first.
    AlreadyClaimed,
    /// The claim does not exceed the domain's current pages.
    NotAboveCurrent,
    /// The claim is above the domain's `max_pages`.
    AboveMax,
    /// Not enough unclaimed free memory.
    OutOfMemory {
        /// Pages the claim needs.
        needed: u64,
        /// Free pages not claimed by anyone.
        available: u64,
    },
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchDomain => f.write_str("no such domain"),
            Self::AlreadyClaimed => f.write_str("the domain already has a claim"),
            Self::NotAboveCurrent => f.write_str("the claim does not exceed the domain's pages"),
            Self::AboveMax => f.write_str("the claim is above the domain's max pages"),
            Self::OutOfMemory { needed, available } => {
                write!(f, "claim needs {needed} pages, {available} unclaimed free")
            }
        }
    }
}
impl core::error::Error for ClaimError {}

/// Xen's `EINVAL`.
pub const EINVAL: i32 = 22;
/// Xen's `ENOMEM`.
pub const ENOMEM: i32 = 12;
/// Xen's `ESRCH`.
pub const ESRCH: i32 = 3;

impl ClaimError {
    /// The negative errno `XENMEM_claim_pages` returns for this error
    /// (`domain_set_outstanding_pages`): `-ESRCH` for an unknown domain,
    /// `-ENOMEM` when the memory is not there, `-EINVAL` otherwise. The one
    /// place the hypercall's status is derived from the error.
    #[must_use]
    pub const fn errno(&self) -> i32 {
        match self {
            Self::NoSuchDomain => -ESRCH,
            Self::OutOfMemory { .. } => -ENOMEM,
            Self::AlreadyClaimed | Self::NotAboveCurrent | Self::AboveMax => -EINVAL,
        }
    }
}

/// Why a whole reservation op was refused. Nothing changed.
///
/// Xen answers an order above the limit, or too many extents, with 0
/// extents done rather than an error; return 0 to the guest for those two
/// to match it. The order limit (9) applies to every domain here, dom0
/// included; Xen gives the control and hardware domains a larger one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReservationError {
    /// No such domain.
    NoSuchDomain,
    /// The extent order is above what a domU may ask for.
    ExtentOrderTooLarge {
        /// The order asked for.
        order: u32,
        /// The limit.
        max: u32,
    },
    /// More extents than the op can encode (`UINT_MAX >> 6`).
    TooManyExtents,
}

impl fmt::Display for ReservationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchDomain => f.write_str("no such domain"),
            Self::ExtentOrderTooLarge { order, max } => {
                write!(f, "extent order {order} is above the limit {max}")
            }
            Self::TooManyExtents => f.write_str("too many extents"),
        }
    }
}
impl core::error::Error for ReservationError {}

/// The host's memory and the books of up to `DOMAINS` domains.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostMemory<const DOMAINS: usize> {
    total: u64,
    free: u64,
    outstanding_claims: u64,
    domains: [Option<DomainMemory>; DOMAINS],
}

impl<const DOMAINS: usize> HostMemory<DOMAINS> {
    /// A host with `total` free pages and no domain.
    #[must_use]
    pub const fn new(total: u64) -> Self {
        Self {
            total,
            free: total,
            outstanding_claims: 0,
            domains: [None; DOMAINS],
        }
    }

    /// Pages the host has for guests.
    #[must_use]
    pub fn total_pages(&self) -> u64 {
        self.total
    }

    /// Pages no domain holds (`total_avail_pages`).
    #[must_use]
    pub fn free_pages(&self) -> u64 {
        self.free
    }

    /// Pages claimed and not yet given, over all domains.
    #[must_use]
    pub fn outstanding_claims(&self) -> u64 {
        self.outstanding_claims
    }

    /// Free pages no claim covers: what a new claim or an unclaimed
    /// allocation may take.
    #[must_use]
    pub fn unclaimed_free_pages(&self) -> u64 {
        self.free.saturating_sub(self.outstanding_claims)
    }

    /// A domain's books.
    #[must_use]
    pub fn domain(&self, domid: DomId) -> Option<&DomainMemory> {
        self.domains.iter().flatten().find(|d| d.domid == domid)
    }

    /// Every domain's books.
    pub fn domains(&self) -> impl Iterator<Item = &DomainMemory> {
        self.domains.iter().flatten()
    }

    /// `free + Σ tot_pages == total`, the claims within free memory, and
    /// the claim total equal to the sum of the domains' claims.
    #[must_use]
    pub fn is_conserved(&self) -> bool {
        let held = self
            .domains()
            .try_fold(0u64, |s, d| s.checked_add(d.tot_pages));
        let claims = self
            .domains()
            .try_fold(0u64, |s, d| s.checked_add(d.outstanding));
        held.and_then(|h| h.checked_add(self.free)) == Some(self.total)
            && claims == Some(self.outstanding_claims)
            && self.outstanding_claims <= self.free
    }

    fn slot(&mut self, domid: DomId) -> Option<&mut DomainMemory> {
        self.domains.iter_mut().flatten().find(|d| d.domid == domid)
    }

    /// Creates an empty domain that may grow to `max_pages`.
    ///
    /// # Errors
    ///
    /// [`CreateError::ReservedId`], [`CreateError::Exists`],
    /// [`CreateError::NoSlot`].
    pub fn create_domain(&mut self, domid: DomId, max_pages: u64) -> Result<(), CreateError> {
        if domid.is_reserved() {
            return Err(CreateError::ReservedId);
        }
        if self.domain(domid).is_some() {
            return Err(CreateError::Exists);
        }
        let Some(slot) = self.domains.iter_mut().find(|d| d.is_none()) else {
            return Err(CreateError::NoSlot);
        };
        *slot = Some(DomainMemory {
            domid,
            tot_pages: 0,
            max_pages,
            outstanding: 0,
        });
        Ok(())
    }

    /// Creates a domain and claims `pages` for it in one step, so that it
    /// exists only if its memory is really there (what a toolstack does
    /// before building a guest).
    ///
    /// # Errors
    ///
    /// As [`create_domain`](Self::create_domain), or
    /// [`CreateError::Claim`] when the claim is refused; then no domain is
    /// created.
    pub fn admit(&mut self, domid: DomId, max_pages: u64, pages: u64) -> Result<(), CreateError> {
        self.create_domain(domid, max_pages)?;
        if let Err(e) = self.claim_pages(domid, pages) {
            let _ = self.destroy_domain(domid);
            return Err(CreateError::Claim(e));
        }
        Ok(())
    }

    /// Destroys a domain: its pages go back to the free pool and its claim
    /// is cancelled. Returns the pages freed.
    ///
    /// # Errors
    ///
    /// [`DomainError::NoSuchDomain`].
    pub fn destroy_domain(&mut self, domid: DomId) -> Result<u64, DomainError> {
        let slot = self
            .domains
            .iter_mut()
            .find(|d| d.is_some_and(|d| d.domid == domid))
            .ok_or(DomainError::NoSuchDomain)?;
        let d = slot.take().ok_or(DomainError::NoSuchDomain)?;
        self.free += d.tot_pages;
        self.outstanding_claims -= d.outstanding;
        Ok(d.tot_pages)
    }

    /// Sets `max_pages` (`XEN_DOMCTL_max_mem`). It may be below the current
    /// size: the domain then cannot grow.
    ///
    /// # Errors
    ///
    /// [`DomainError::NoSuchDomain`].
    pub fn set_max_pages(&mut self, domid: DomId, max_pages: u64) -> Result<(), DomainError> {
        self.slot(domid).ok_or(DomainError::NoSuchDomain)?.max_pages = max_pages;
        Ok(())
    }

    /// `XENMEM_claim_pages`: the domain will grow to `pages`; stake
    /// `pages - tot_pages` free pages for it. `pages == 0` cancels the
    /// domain's claim.
    ///
    /// # Errors
    ///
    /// Every [`ClaimError`] variant; nothing changes on error.
    pub fn claim_pages(&mut self, domid: DomId, pages: u64) -> Result<(), ClaimError> {
        let available = self.unclaimed_free_pages();
        let d = *self.domain(domid).ok_or(ClaimError::NoSuchDomain)?;
        if pages == 0 {
            self.outstanding_claims -= d.outstanding;
            if let Some(d) = self.slot(domid) {
                d.outstanding = 0;
            }
            return Ok(());
        }
        if d.outstanding != 0 {
            return Err(ClaimError::AlreadyClaimed);
        }
        if pages <= d.tot_pages {
            return Err(ClaimError::NotAboveCurrent);
        }
        if pages > d.max_pages {
            return Err(ClaimError::AboveMax);
        }
        let needed = pages - d.tot_pages;
        if needed > available {
            return Err(ClaimError::OutOfMemory { needed, available });
        }
        self.outstanding_claims += needed;
        if let Some(d) = self.slot(domid) {
            d.outstanding = needed;
        }
        Ok(())
    }

    /// `XENMEM_populate_physmap`: back `nr_extents` extents of
    /// `2^extent_order` pages, one by one, stopping at the first that fails
    /// (`max_pages`, or free memory that is not claimed by someone else).
    /// Returns the extents done.
    ///
    /// # Errors
    ///
    /// Every [`ReservationError`] variant; then nothing is done.
    pub fn populate_physmap(
        &mut self,
        domid: DomId,
        nr_extents: u64,
        extent_order: u32,
    ) -> Result<u64, ReservationError> {
        self.grow(domid, nr_extents, extent_order)
    }

    /// `XENMEM_increase_reservation`: the accounting is that of
    /// [`populate_physmap`](Self::populate_physmap) (the two differ in which
    /// frames the guest names, not in what they cost).
    ///
    /// # Errors
    ///
    /// Every [`ReservationError`] variant; then nothing is done.
    pub fn increase_reservation(
        &mut self,
        domid: DomId,
        nr_extents: u64,
        extent_order: u32,
    ) -> Result<u64, ReservationError> {
        self.grow(domid, nr_extents, extent_order)
    }

    fn check_op(
        &self,
        domid: DomId,
        nr_extents: u64,
        extent_order: u32,
    ) -> Result<u64, ReservationError> {
        if domid.is_reserved() || self.domain(domid).is_none() {
            return Err(ReservationError::NoSuchDomain);
        }
        if extent_order > DOMU_MAX_EXTENT_ORDER {
            return Err(ReservationError::ExtentOrderTooLarge {
                order: extent_order,
                max: DOMU_MAX_EXTENT_ORDER,
            });
        }
        if nr_extents > MAX_NR_EXTENTS {
            return Err(ReservationError::TooManyExtents);
        }
        Ok(1 << extent_order)
    }

    fn grow(
        &mut self,
        domid: DomId,
        nr_extents: u64,
        extent_order: u32,
    ) -> Result<u64, ReservationError> {
        let per = self.check_op(domid, nr_extents, extent_order)?;
        let (mut free, mut claims) = (self.free, self.outstanding_claims);
        let d = self.slot(domid).ok_or(ReservationError::NoSuchDomain)?;
        // Xen's per-extent rule, in closed form so that the work is O(1)
        // whatever count the guest passes: an extent succeeds if the free
        // memory nobody claimed covers it, or the domain's own claim does.
        let mut left = nr_extents.min(d.max_pages.saturating_sub(d.tot_pages) / per);
        let mut own = d.outstanding;
        // 1. Extents wholly covered by the domain's claim.
        let k = left.min(own / per);
        let mut done = k;
        (own, claims, free, left) = (own - k * per, claims - k * per, free - k * per, left - k);
        // 2. An extent partly covered: needs unclaimed memory for all of it,
        //    and uses up the rest of the claim.
        if left > 0 && own > 0 {
            if free.saturating_sub(claims) >= per {
                (claims, free, left, done) = (claims - own, free - per, left - 1, done + 1);
                own = 0;
            } else {
                left = 0;
            }
        }
        // 3. Unclaimed memory only.
        let k = left.min(free.saturating_sub(claims) / per);
        free -= k * per;
        done += k;
        d.tot_pages += done * per;
        d.outstanding = own;
        self.free = free;
        self.outstanding_claims = claims;
        Ok(done)
    }

    /// `XENMEM_decrease_reservation`: free `nr_extents` extents of
    /// `2^extent_order` pages, stopping when the domain has no whole extent
    /// left. The embedder has checked, in its p2m, that each named frame is
    /// the domain's. Returns the extents freed.
    ///
    /// # Errors
    ///
    /// Every [`ReservationError`] variant; then nothing is done.
    pub fn decrease_reservation(
        &mut self,
        domid: DomId,
        nr_extents: u64,
        extent_order: u32,
    ) -> Result<u64, ReservationError> {
        let per = self.check_op(domid, nr_extents, extent_order)?;
        let d = self.slot(domid).ok_or(ReservationError::NoSuchDomain)?;
        let done = nr_extents.min(d.tot_pages / per);
        d.tot_pages -= done * per;
        self.free += done * per;
        Ok(done)
    }

    /// `XENMEM_current_reservation`.
    ///
    /// # Errors
    ///
    /// [`DomainError::NoSuchDomain`].
    pub fn current_reservation(&self, domid: DomId) -> Result<u64, DomainError> {
        self.domain(domid)
            .map(|d| d.tot_pages)
            .ok_or(DomainError::NoSuchDomain)
    }

    /// `XENMEM_maximum_reservation`.
    ///
    /// # Errors
    ///
    /// [`DomainError::NoSuchDomain`].
    pub fn maximum_reservation(&self, domid: DomId) -> Result<u64, DomainError> {
        self.domain(domid)
            .map(|d| d.max_pages)
            .ok_or(DomainError::NoSuchDomain)
    }
}

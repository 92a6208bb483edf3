//! Honest guests: seeded workloads in PV guests with a Xen balloon driver.
//!
//! Each guest is a small model of a Linux PV guest:
//!
//! - **Kernel free pages** ([`GuestPages`] for the balloon driver): frames
//!   the guest holds and does not use. The driver balloons out only these,
//!   and never below a kernel reserve ("don't try hard").
//! - **A working set** that grows and shrinks in phases. Resident pages hold
//!   data (a fingerprint the guest remembers and the checker verifies).
//!   Growth is faulted in while the kernel has free pages; an access to a
//!   page that is not resident is a page fault (the miss rate) that takes a
//!   free page, or evicts a random resident page. Even pages are page
//!   cache (clean file data), odd pages anonymous memory. An evicted
//!   anonymous page goes to swap: frontswap (a tmem persistent pool, `PUT`)
//!   if the guest uses tmem and the put succeeds, else the swap disk; an
//!   evicted file page is dropped after a cleancache put (a tmem ephemeral
//!   pool) if the guest uses tmem. A fault on a swapped page loads it from
//!   frontswap (`GET`, which must hit and return the data intact, then
//!   `FLUSH_PAGE`: the swap slot is freed) or from the disk; a fault on a
//!   file page tries cleancache first (a hit must return the last data
//!   put) and reads the disk on a miss. Pages that leave the working set
//!   are flushed from tmem. The accesses are drawn from their own random
//!   stream, so every policy sees the same accesses; eviction victims,
//!   process churn and the checker's samples have streams of their own.
//! - **Processes**: each is a four-level PV page-table tree (L4, L3, L2, L1)
//!   over a few data pages, built with `mmu_update` plain writes into fresh
//!   frames, pinned with `MMUEXT_PIN_L4_TABLE` (validation takes the whole
//!   tree's references), remapped now and then (an L1 entry loses or gains
//!   RW), and torn down by unpinning (the frame table de-validates the tree).
//! - **The balloon driver** (balloon-proto's `BalloonDriver`), run once per
//!   simulated second, whose `populate_physmap` / `decrease_reservation`
//!   batches go through the hypercall layer.

use hvmem_balloon_proto::GuestPages;
use hvmem_balloon_proto::xen::abi::MemoryOp;
use hvmem_balloon_proto::xen::driver::{
    BalloonDriver, DriverConfig, GuestKind, Step, driver_storage_words,
};
use hvmem_pagetable::pv::MmuUpdate;
use hvmem_types::{DomId, Gfn, Mfn};

use crate::abi::XENMEM_POPULATE_PHYSMAP;
use crate::abi::{MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE, XENMEM_DECREASE_RESERVATION};
use crate::host::Host;
use crate::hypercall::{Hypercall, MemoryArg, MmuextOp, Reservation};
use crate::invariants::Violation;
use crate::rng::{Rng, mix};
use hvmem_tmem_pool::abi::{
    PRIVATE_EPHEMERAL, PRIVATE_PERSISTENT, TMEM_FLUSH_PAGE, TMEM_GET_PAGE, TMEM_PUT_PAGE, TmemOp,
};
use hvmem_tmem_pool::guest_keys::frontswap_key;
use hvmem_tmem_pool::{Oid, Uuid};

/// Balloon batches (of 512 pages) a driver may move in one second.
pub const BATCHES_PER_SEC: u32 = 16;

const PRESENT: u64 = 1;
const RW: u64 = 2;

/// The kernel's free pages, as the balloon driver sees them.
#[derive(Debug, Default)]
pub struct Kernel {
    free: Vec<Gfn>,
    reserve: usize,
}

impl GuestPages for Kernel {
    fn alloc_page(&mut self) -> Option<Gfn> {
        if self.free.len() > self.reserve {
            self.free.pop()
        } else {
            None
        }
    }

    fn free_page(&mut self, gfn: Gfn) {
        self.free.push(gfn);
    }
}

/// One process: its page-table tree (root first) and data pages.
#[derive(Debug)]
struct Process {
    tables: [Gfn; 4],
    pages: Vec<(Gfn, u64)>,
}

/// What a guest did, summed over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestStats {
    /// Working-set accesses.
    pub accesses: u64,
    /// Accesses to non-resident pages (major page faults).
    pub misses: u64,
    /// Pages read from the disk (swap-ins and page-cache refaults tmem did
    /// not serve).
    pub disk_reads: u64,
    /// Anonymous pages written to the swap disk.
    pub swap_disk_writes: u64,
    /// Anonymous pages swapped out to frontswap instead of the disk.
    pub swap_avoided: u64,
    /// tmem gets (frontswap loads and cleancache gets).
    pub tmem_gets: u64,
    /// tmem gets that found the page.
    pub tmem_hits: u64,
    /// Pages the balloon populated.
    pub ballooned_in: u64,
    /// Pages the balloon gave back.
    pub ballooned_out: u64,
    /// Hypercalls issued.
    pub hypercalls: u64,
    /// Processes created.
    pub processes: u64,
}

/// The shape of a guest's workload.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Working set range, as per mille of the guest's maximum.
    pub ws_min_per_mille: u64,
    /// Upper end of the working-set range.
    pub ws_max_per_mille: u64,
    /// Seconds per working-set phase (the length varies ±50%).
    pub phase_secs: u64,
    /// Working-set accesses per second.
    pub accesses_per_sec: u64,
    /// Pages a growing working set faults in per second.
    pub fault_in_per_sec: u64,
    /// Per mille chance per second of creating a process.
    pub spawn_per_mille: u64,
    /// Per mille chance per second of a process exiting.
    pub exit_per_mille: u64,
    /// At most this many processes at once.
    pub max_processes: usize,
}

impl Workload {
    /// The consolidation workload: phases of 3-10 minutes, moderate churn.
    #[must_use]
    pub const fn consolidation() -> Self {
        Self {
            ws_min_per_mille: 50,
            ws_max_per_mille: 1000,
            phase_secs: 300,
            accesses_per_sec: 200,
            fault_in_per_sec: 1024,
            spawn_per_mille: 300,
            exit_per_mille: 250,
            max_processes: 8,
        }
    }

    /// Page-table churn: processes come and go every second.
    #[must_use]
    pub const fn churn() -> Self {
        Self {
            spawn_per_mille: 900,
            exit_per_mille: 800,
            max_processes: 32,
            phase_secs: 120,
            ..Self::consolidation()
        }
    }
}

/// No data slot: the working-set page is not resident.
const NOT_RESIDENT: u32 = u32::MAX;

/// Where a non-resident page's data is, besides the disk.
const ON_DISK: u8 = 0;
/// In the guest's cleancache pool (the host may have evicted it).
const IN_CLEANCACHE: u8 = 1;
/// In the guest's frontswap pool (the host must keep it).
const IN_FRONTSWAP: u8 = 2;

/// Pages per file of the guest's page cache (one cleancache object each).
const FILE_PAGES: u64 = 1024;

/// The guest's tmem pools.
#[derive(Clone, Copy, Debug)]
struct Pools {
    cleancache: i32,
    frontswap: i32,
}

/// An honest guest.
#[derive(Debug)]
pub struct Guest {
    id: DomId,
    max_pages: u64,
    driver: BalloonDriver<Vec<u64>>,
    kernel: Kernel,
    /// Resident working-set pages: frame, data, working-set index.
    data: Vec<(Gfn, u64, u32)>,
    /// Per working-set page: its slot in `data`, or `NOT_RESIDENT`.
    slot: Vec<u32>,
    /// Per working-set page: its data while not resident (0: never
    /// written, a zero-fill page).
    saved: Vec<u64>,
    /// Per working-set page: where its data is besides the disk.
    stash: Vec<u8>,
    /// Working-set pages to fault in when memory is free.
    pending: Vec<u32>,
    pools: Option<Pools>,
    frontswap_pages: u64,
    /// Pages kept out of the kernel for split-driver buffers.
    io_pages: u64,
    processes: Vec<Process>,
    ws: u64,
    phase_ends: u64,
    asleep_until: u64,
    version: u64,
    /// Working-set phases and accesses: the same under every policy.
    rng: Rng,
    /// Eviction victims.
    evict_rng: Rng,
    /// Process creation, exit and remapping.
    churn_rng: Rng,
    /// The pages the checker samples.
    check_rng: Rng,
    workload: Workload,
    /// What it did.
    pub stats: GuestStats,
}

impl Guest {
    /// A guest `id` that booted with guest frames `0..populated` of a
    /// physmap of `max_pages`.
    ///
    /// # Panics
    ///
    /// Never for `populated <= max_pages` (the driver's only refusal).
    #[must_use]
    pub fn new(id: DomId, max_pages: u64, populated: u64, workload: Workload, seed: u64) -> Self {
        let config = DriverConfig::linux(
            GuestKind::Pv,
            max_pages,
            populated.min(max_pages),
            max_pages.saturating_mul(4),
        );
        let storage = vec![0u64; driver_storage_words(max_pages)];
        #[allow(clippy::expect_used)]
        let driver = BalloonDriver::new(config, storage).expect("populated <= physmap");
        let reserve = usize::try_from((max_pages / 64).max(16)).unwrap_or(16);
        Self {
            id,
            max_pages,
            driver,
            kernel: Kernel {
                free: (0..populated.min(max_pages)).rev().map(Gfn::new).collect(),
                reserve,
            },
            data: Vec::new(),
            slot: vec![NOT_RESIDENT; usize::try_from(max_pages).unwrap_or(0)],
            saved: vec![0; usize::try_from(max_pages).unwrap_or(0)],
            stash: vec![ON_DISK; usize::try_from(max_pages).unwrap_or(0)],
            pending: Vec::new(),
            pools: None,
            frontswap_pages: 0,
            io_pages: 0,
            processes: Vec::new(),
            ws: 0,
            phase_ends: 0,
            asleep_until: 0,
            version: 0,
            rng: Rng::new(mix(seed) ^ mix(u64::from(id.get()).wrapping_add(0x5eed))),
            evict_rng: Rng::new(mix(seed ^ 0xe71c) ^ mix(u64::from(id.get()))),
            churn_rng: Rng::new(mix(seed ^ 0xc4a2) ^ mix(u64::from(id.get()))),
            check_rng: Rng::new(mix(seed ^ 0xc8ec) ^ mix(u64::from(id.get()))),
            workload,
            stats: GuestStats::default(),
        }
    }

    /// The domain.
    #[must_use]
    pub fn id(&self) -> DomId {
        self.id
    }

    /// The working set, pages.
    #[must_use]
    pub fn working_set(&self) -> u64 {
        self.ws
    }

    /// Working-set pages resident.
    #[must_use]
    pub fn resident(&self) -> u64 {
        self.data.len() as u64
    }

    /// Pages the guest commits: working set, processes, kernel reserve.
    #[must_use]
    pub fn committed(&self) -> u64 {
        self.ws + self.process_pages() + self.kernel.reserve as u64 + self.io_pages
    }

    /// Takes `n` pages out of the kernel's free pages for split-driver
    /// buffers (they stay the guest's for good); `None` if it has fewer to
    /// spare above its reserve.
    pub fn take_io_pages(&mut self, n: usize) -> Option<Vec<Gfn>> {
        if self.kernel.free.len() < self.kernel.reserve + n {
            return None;
        }
        let pages: Vec<Gfn> = (0..n).filter_map(|_| self.kernel.free.pop()).collect();
        self.io_pages += pages.len() as u64;
        Some(pages)
    }

    fn process_pages(&self) -> u64 {
        self.processes
            .iter()
            .map(|p| 4 + p.pages.len() as u64)
            .sum()
    }

    /// The balloon driver.
    #[must_use]
    pub fn driver(&self) -> &BalloonDriver<Vec<u64>> {
        &self.driver
    }

    /// The static maximum, pages.
    #[must_use]
    pub fn max_pages(&self) -> u64 {
        self.max_pages
    }

    /// The kernel reserve, pages.
    #[must_use]
    pub fn reserve(&self) -> u64 {
        self.kernel.reserve as u64
    }

    /// The toolstack (or the guest itself) sets a new balloon target.
    pub fn set_target_pages(&mut self, pages: u64) {
        let pages = pages.min(self.max_pages);
        if self.driver.set_target_kib(pages.saturating_mul(4)).is_ok() {
            self.asleep_until = 0;
        }
    }

    fn fingerprint(&mut self, gfn: Gfn) -> u64 {
        self.version += 1;
        mix(u64::from(self.id.get()) << 48 ^ gfn.get() << 8 ^ self.version) | 0x100
    }

    fn mfn(host: &Host<'_>, id: DomId, gfn: Gfn) -> Result<Mfn, Violation> {
        host.domain(id)
            .and_then(|d| d.mfn(gfn))
            .ok_or(Violation::Physmap {
                mfn: Mfn::new(gfn.get()),
            })
    }

    /// Stores fresh data into `gfn` and returns its fingerprint.
    fn store(&mut self, host: &mut Host<'_>, gfn: Gfn) -> Result<u64, Violation> {
        let fp = self.fingerprint(gfn);
        let mfn = Self::mfn(host, self.id, gfn)?;
        host.guest_store(self.id, mfn, fp)
            .map_err(|_| Violation::GuestData { mfn })?;
        Ok(fp)
    }

    /// One simulated second of the guest at time `now`.
    ///
    /// # Errors
    ///
    /// A [`Violation`] when the host refuses something an honest guest is
    /// entitled to (its own memory, its own page tables).
    pub fn step(&mut self, host: &mut Host<'_>, now: u64) -> Result<(), Violation> {
        let old_ws = self.ws;
        self.phase(now);
        self.fit_working_set(host, old_ws)?;
        self.access(host)?;
        self.churn(host)?;
        self.balloon(host, now)
    }

    fn phase(&mut self, now: u64) {
        if now < self.phase_ends {
            return;
        }
        let w = self.workload;
        let span = w.ws_max_per_mille.saturating_sub(w.ws_min_per_mille);
        let per_mille = w.ws_min_per_mille + self.rng.below(span + 1);
        self.ws = self.max_pages * per_mille / 1000;
        let len = w.phase_secs / 2 + self.rng.below(w.phase_secs + 1);
        self.phase_ends = now + len.max(1);
    }

    /// The working set changed: pages that left it are dropped (their
    /// frames go back to the kernel, their tmem copies are flushed); pages
    /// that joined it are faulted in while the kernel has free pages.
    fn fit_working_set(&mut self, host: &mut Host<'_>, old_ws: u64) -> Result<(), Violation> {
        if self.ws < old_ws {
            for idx in self.ws..old_ws {
                self.forget(host, idx as u32)?;
            }
            let ws = self.ws;
            self.pending.retain(|&i| u64::from(i) < ws);
        } else {
            self.pending
                .extend((old_ws..self.ws).rev().map(|i| i as u32));
        }
        let mut budget = self.workload.fault_in_per_sec;
        while budget > 0 && self.kernel.free.len() > self.kernel.reserve {
            let Some(idx) = self.pending.pop() else {
                break;
            };
            if u64::from(idx) >= self.ws || self.is_resident(idx) {
                continue;
            }
            self.fault_in(host, idx)?;
            budget -= 1;
        }
        Ok(())
    }

    fn is_resident(&self, idx: u32) -> bool {
        self.slot
            .get(idx as usize)
            .is_some_and(|&s| s != NOT_RESIDENT)
    }

    /// Working-set page `idx` is a page-cache page (clean file data, for
    /// cleancache) when even, an anonymous page (for swap) when odd.
    fn is_file(idx: u32) -> bool {
        idx % 2 == 0
    }

    fn cleancache_key(idx: u32) -> (Oid, u32) {
        let file = u64::from(idx) / FILE_PAGES;
        (Oid([file + 1, 0, 0]), (u64::from(idx) % FILE_PAGES) as u32)
    }

    fn frontswap_key(idx: u32) -> (Oid, u32) {
        // Offsets below 2^36 always fit; the fallback is never taken.
        frontswap_key(0, u64::from(idx)).unwrap_or((Oid([0, 0, 0]), idx))
    }

    /// Issues one `tmem_op` page command for working-set page `idx`.
    fn tmem_page_op(&mut self, host: &mut Host<'_>, cmd: u32, idx: u32, mfn: u64) -> i64 {
        let Some(pools) = self.pools else {
            return -crate::abi::ENOSYS;
        };
        let (pool, (oid, index)) = if Self::is_file(idx) {
            (pools.cleancache, Self::cleancache_key(idx))
        } else {
            (pools.frontswap, Self::frontswap_key(idx))
        };
        self.stats.hypercalls += 1;
        host.hypercall(
            self.id,
            Hypercall::TmemOp {
                op: TmemOp::page(cmd, pool, oid, index, mfn),
            },
        )
        .rc
    }

    /// Page `idx` leaves the working set.
    fn forget(&mut self, host: &mut Host<'_>, idx: u32) -> Result<(), Violation> {
        let i = idx as usize;
        if self.is_resident(idx) {
            let gfn = self.unmap_slot(idx);
            self.kernel.free.push(gfn);
        }
        match self.stash.get(i).copied() {
            Some(IN_FRONTSWAP) => {
                // swap slot freed: frontswap_invalidate_page.
                if self.tmem_page_op(host, TMEM_FLUSH_PAGE, idx, 0) != 1 {
                    return Err(Violation::TmemData {
                        domid: self.id,
                        page: u64::from(idx),
                    });
                }
                self.frontswap_pages = self.frontswap_pages.saturating_sub(1);
            }
            Some(IN_CLEANCACHE) => {
                // file truncated: cleancache_invalidate_page.
                let _ = self.tmem_page_op(host, TMEM_FLUSH_PAGE, idx, 0);
            }
            _ => {}
        }
        if let Some(x) = self.stash.get_mut(i) {
            *x = ON_DISK;
        }
        if let Some(x) = self.saved.get_mut(i) {
            *x = 0;
        }
        Ok(())
    }

    /// Takes resident page `idx` out of `data`; returns its frame.
    fn unmap_slot(&mut self, idx: u32) -> Gfn {
        let Some(s) = self.slot.get_mut(idx as usize) else {
            return Gfn::new(u64::MAX);
        };
        let k = core::mem::replace(s, NOT_RESIDENT) as usize;
        if k >= self.data.len() {
            return Gfn::new(u64::MAX);
        }
        let (gfn, _, _) = self.data.swap_remove(k);
        if let Some(&(_, _, moved)) = self.data.get(k)
            && let Some(s) = self.slot.get_mut(moved as usize)
        {
            *s = k as u32;
        }
        gfn
    }

    /// Makes working-set page `idx` resident: in a free kernel page, or in
    /// the frame of a resident page it evicts (swapped out to frontswap or
    /// disk, or, for a clean file page, put in cleancache and dropped). Its
    /// data comes back from frontswap, cleancache or the disk, each checked
    /// against what the guest wrote. Returns `false` when the guest has no
    /// frame to use at all.
    fn fault_in(&mut self, host: &mut Host<'_>, idx: u32) -> Result<bool, Violation> {
        let gfn = if self.kernel.free.len() > self.kernel.reserve {
            match self.kernel.free.pop() {
                Some(g) => g,
                None => return Ok(false),
            }
        } else {
            if self.data.is_empty() {
                return Ok(false);
            }
            let k = self.evict_rng.below(self.data.len() as u64) as usize;
            let Some(&(gfn, fp, victim)) = self.data.get(k) else {
                return Ok(false);
            };
            self.evict(host, gfn, fp, victim)?;
            self.unmap_slot(victim);
            gfn
        };
        let mfn = Self::mfn(host, self.id, gfn)?;
        let i = idx as usize;
        let saved = self.saved.get(i).copied().unwrap_or(0);
        let stash = self.stash.get(i).copied().unwrap_or(ON_DISK);
        let bad = Violation::TmemData {
            domid: self.id,
            page: u64::from(idx),
        };
        let fp = if stash == IN_FRONTSWAP {
            // frontswap_load: a persistent page must be there, intact.
            self.stats.tmem_gets += 1;
            if self.tmem_page_op(host, TMEM_GET_PAGE, idx, mfn.get()) != 1
                || host.memory().fingerprint(mfn) != Some(saved)
            {
                return Err(bad);
            }
            self.stats.tmem_hits += 1;
            // The swap slot is freed: frontswap_invalidate_page.
            if self.tmem_page_op(host, TMEM_FLUSH_PAGE, idx, 0) != 1 {
                return Err(bad);
            }
            self.frontswap_pages = self.frontswap_pages.saturating_sub(1);
            saved
        } else if stash == IN_CLEANCACHE && {
            self.stats.tmem_gets += 1;
            self.tmem_page_op(host, TMEM_GET_PAGE, idx, mfn.get()) == 1
        } {
            // cleancache_get: an ephemeral page is the last put or nothing.
            if host.memory().fingerprint(mfn) != Some(saved) {
                return Err(bad);
            }
            self.stats.tmem_hits += 1;
            saved
        } else if saved != 0 {
            // From the disk (swap device or file).
            self.stats.disk_reads += 1;
            host.guest_store(self.id, mfn, saved)
                .map_err(|_| Violation::GuestData { mfn })?;
            saved
        } else {
            // A page never written: zero-filled, then written.
            self.store(host, gfn)?
        };
        if let Some(x) = self.stash.get_mut(i) {
            *x = ON_DISK;
        }
        if let Some(x) = self.slot.get_mut(i) {
            *x = self.data.len() as u32;
        }
        self.data.push((gfn, fp, idx));
        Ok(true)
    }

    /// Resident page `idx` (data `fp` in `gfn`) is evicted.
    fn evict(&mut self, host: &mut Host<'_>, gfn: Gfn, fp: u64, idx: u32) -> Result<(), Violation> {
        let i = idx as usize;
        let mut stash = ON_DISK;
        if self.pools.is_some() {
            let mfn = Self::mfn(host, self.id, gfn)?;
            let rc = self.tmem_page_op(host, TMEM_PUT_PAGE, idx, mfn.get());
            if rc == 1 {
                stash = if Self::is_file(idx) {
                    IN_CLEANCACHE
                } else {
                    self.frontswap_pages += 1;
                    IN_FRONTSWAP
                };
            }
        }
        if !Self::is_file(idx) {
            if stash == IN_FRONTSWAP {
                self.stats.swap_avoided += 1;
            } else {
                self.stats.swap_disk_writes += 1;
            }
        }
        if let Some(x) = self.stash.get_mut(i) {
            *x = stash;
        }
        if let Some(x) = self.saved.get_mut(i) {
            *x = fp;
        }
        Ok(())
    }

    fn access(&mut self, host: &mut Host<'_>) -> Result<(), Violation> {
        if self.ws == 0 {
            return Ok(());
        }
        for _ in 0..self.workload.accesses_per_sec {
            // Drawn whatever happens next, so that every policy sees the
            // same accesses.
            let idx = self.rng.below(self.ws) as u32;
            // One access in eight writes the page.
            let write = self.rng.chance(125);
            self.stats.accesses += 1;
            if !self.is_resident(idx) {
                self.stats.misses += 1;
                if !self.fault_in(host, idx)? {
                    continue;
                }
            }
            if write {
                let k = self.slot.get(idx as usize).copied().unwrap_or(NOT_RESIDENT) as usize;
                let Some(&(gfn, _, _)) = self.data.get(k) else {
                    continue;
                };
                let fp = self.store(host, gfn)?;
                if let Some(slot) = self.data.get_mut(k) {
                    slot.1 = fp;
                }
            }
        }
        Ok(())
    }

    /// Turns on cleancache and frontswap: creates a private ephemeral and a
    /// private persistent pool with `tmem_op` `NEW_POOL`.
    ///
    /// # Errors
    ///
    /// [`Violation::TmemFrames`] if the host refuses the pools.
    pub fn enable_tmem(&mut self, host: &mut Host<'_>) -> Result<(), Violation> {
        let mut new_pool = |flags| {
            host.hypercall(
                self.id,
                Hypercall::TmemOp {
                    op: TmemOp::new_pool(Uuid::NONE, flags),
                },
            )
            .rc
        };
        let cleancache = new_pool(PRIVATE_EPHEMERAL);
        let frontswap = new_pool(PRIVATE_PERSISTENT);
        self.stats.hypercalls += 2;
        match (i32::try_from(cleancache), i32::try_from(frontswap)) {
            (Ok(c), Ok(f)) if c >= 0 && f >= 0 => {
                self.pools = Some(Pools {
                    cleancache: c,
                    frontswap: f,
                });
                Ok(())
            }
            _ => Err(Violation::TmemFrames {
                lent: 0,
                held: 0,
                pages: 0,
            }),
        }
    }

    /// Pages the guest has in frontswap.
    #[must_use]
    pub fn frontswap_pages(&self) -> u64 {
        self.frontswap_pages
    }

    /// Checks that every page the guest has in frontswap is in tmem,
    /// holding what the guest swapped out (persistent tmem data intact).
    ///
    /// # Errors
    ///
    /// [`Violation::TmemData`] naming the first page lost or changed.
    pub fn check_tmem(&self, host: &mut Host<'_>) -> Result<u64, Violation> {
        let Some(pools) = self.pools else {
            return Ok(0);
        };
        let pool = u32::try_from(pools.frontswap).unwrap_or(u32::MAX);
        let mut checked = 0;
        for (idx, &stash) in self.stash.iter().enumerate() {
            if stash != IN_FRONTSWAP {
                continue;
            }
            let idx = idx as u32;
            let (oid, index) = Self::frontswap_key(idx);
            let want = crate::tmem::page_of(self.saved.get(idx as usize).copied().unwrap_or(0));
            if host.tmem_peek_persistent(self.id, pool, oid, index) != Some(want) {
                return Err(Violation::TmemData {
                    domid: self.id,
                    page: u64::from(idx),
                });
            }
            checked += 1;
        }
        if checked != self.frontswap_pages {
            return Err(Violation::TmemData {
                domid: self.id,
                page: u64::MAX,
            });
        }
        Ok(checked)
    }

    fn churn(&mut self, host: &mut Host<'_>) -> Result<(), Violation> {
        let w = self.workload;
        if self.processes.len() < w.max_processes && self.churn_rng.chance(w.spawn_per_mille) {
            self.spawn(host)?;
        }
        if !self.processes.is_empty() && self.churn_rng.chance(w.exit_per_mille) {
            let i = self.churn_rng.below(self.processes.len() as u64) as usize;
            self.exit(host, i)?;
        }
        if !self.processes.is_empty() {
            let i = self.churn_rng.below(self.processes.len() as u64) as usize;
            self.remap(host, i)?;
        }
        Ok(())
    }

    fn update(
        host: &mut Host<'_>,
        id: DomId,
        table: Mfn,
        index: u64,
        val: u64,
    ) -> Result<(), Violation> {
        let req = [MmuUpdate {
            ptr: (table.get() << 12) | (index * 8),
            val,
        }];
        let out = host.hypercall(
            id,
            Hypercall::MmuUpdate {
                requests: &req,
                foreigndom: DomId::SELF,
            },
        );
        if out.rc == 0 {
            Ok(())
        } else {
            Err(Violation::Type { mfn: table })
        }
    }

    fn mmuext(host: &mut Host<'_>, id: DomId, cmd: u32, mfn: Mfn) -> Result<(), Violation> {
        let out = host.hypercall(
            id,
            Hypercall::MmuextOp {
                ops: &[MmuextOp {
                    cmd,
                    mfn: mfn.get(),
                }],
                foreigndom: DomId::SELF,
            },
        );
        if out.rc == 0 {
            Ok(())
        } else {
            Err(Violation::Type { mfn })
        }
    }

    /// Builds a process's tree in fresh frames and pins its root.
    fn spawn(&mut self, host: &mut Host<'_>) -> Result<(), Violation> {
        let data_pages = 1 + self.churn_rng.below(8) as usize;
        if self.kernel.free.len() < self.kernel.reserve + 4 + data_pages {
            return Ok(());
        }
        let mut take = || self.kernel.free.pop();
        let (Some(l4), Some(l3), Some(l2), Some(l1)) = (take(), take(), take(), take()) else {
            return Ok(());
        };
        let mut pages = Vec::with_capacity(data_pages);
        for _ in 0..data_pages {
            let Some(gfn) = self.kernel.free.pop() else {
                break;
            };
            let fp = self.store(host, gfn)?;
            pages.push((gfn, fp));
        }
        let id = self.id;
        let (l4m, l3m) = (Self::mfn(host, id, l4)?, Self::mfn(host, id, l3)?);
        let (l2m, l1m) = (Self::mfn(host, id, l2)?, Self::mfn(host, id, l1)?);
        // Fresh table frames are zeroed first, as a kernel does.
        for m in [l4m, l3m, l2m, l1m] {
            host.guest_store(id, m, 0)
                .map_err(|_| Violation::GuestData { mfn: m })?;
        }
        for (i, &(gfn, _)) in pages.iter().enumerate() {
            let m = Self::mfn(host, id, gfn)?;
            Self::update(host, id, l1m, i as u64, m.get() << 12 | PRESENT | RW)?;
        }
        Self::update(host, id, l2m, 0, l1m.get() << 12 | PRESENT | RW)?;
        Self::update(host, id, l3m, 0, l2m.get() << 12 | PRESENT | RW)?;
        Self::update(host, id, l4m, 0, l3m.get() << 12 | PRESENT | RW)?;
        Self::mmuext(host, id, MMUEXT_PIN_L4_TABLE, l4m)?;
        self.stats.hypercalls += 4 + pages.len() as u64;
        self.stats.processes += 1;
        self.processes.push(Process {
            tables: [l4, l3, l2, l1],
            pages,
        });
        Ok(())
    }

    /// Unpins a process's root: the frame table de-validates the tree and
    /// drops every reference it held; its frames go back to the kernel.
    fn exit(&mut self, host: &mut Host<'_>, i: usize) -> Result<(), Violation> {
        if i >= self.processes.len() {
            return Ok(());
        }
        let p = self.processes.swap_remove(i);
        let root = Self::mfn(host, self.id, p.tables[0])?;
        Self::mmuext(host, self.id, MMUEXT_UNPIN_TABLE, root)?;
        self.stats.hypercalls += 1;
        self.kernel.free.extend(p.tables);
        self.kernel.free.extend(p.pages.iter().map(|&(g, _)| g));
        Ok(())
    }

    /// Flips RW on one L1 entry of a process (a `mprotect`).
    fn remap(&mut self, host: &mut Host<'_>, i: usize) -> Result<(), Violation> {
        let id = self.id;
        let Some(p) = self.processes.get(i) else {
            return Ok(());
        };
        if p.pages.is_empty() {
            return Ok(());
        }
        let k = self.churn_rng.below(p.pages.len() as u64) as usize;
        let l1 = Self::mfn(host, id, p.tables[3])?;
        let page = Self::mfn(host, id, p.pages.get(k).map_or(Gfn::new(u64::MAX), |x| x.0))?;
        let rw = if self.churn_rng.chance(500) { RW } else { 0 };
        Self::update(host, id, l1, k as u64, page.get() << 12 | PRESENT | rw)?;
        self.stats.hypercalls += 1;
        Ok(())
    }

    /// The balloon thread's second: iterations while it has work and is
    /// awake (Linux loops at once after a batch that left credit), at most
    /// [`BATCHES_PER_SEC`].
    fn balloon(&mut self, host: &mut Host<'_>, now: u64) -> Result<(), Violation> {
        for _ in 0..BATCHES_PER_SEC {
            if now < self.asleep_until || !self.balloon_batch(host, now)? {
                break;
            }
        }
        Ok(())
    }

    /// One iteration of the balloon thread; `false` when it went to sleep.
    fn balloon_batch(&mut self, host: &mut Host<'_>, now: u64) -> Result<bool, Violation> {
        let id = self.id;
        let step = self.driver.poll(&mut self.kernel);
        let (op, mut list): (MemoryOp, Vec<u64>) = match step {
            Ok(Step::Hypercall(r)) => {
                let list = match r.op {
                    MemoryOp::DecreaseReservation => r
                        .extents
                        .iter()
                        .map(|&g| {
                            host.domain(id)
                                .and_then(|d| d.mfn(g))
                                .map_or(u64::MAX, |m| m.get())
                        })
                        .collect(),
                    _ => r.extents.iter().map(|g| g.get()).collect(),
                };
                (r.op, list)
            }
            Ok(Step::Sleep { seconds }) => {
                self.asleep_until = now + u64::from(seconds.max(1));
                return Ok(false);
            }
            Ok(Step::Idle) | Err(_) => {
                self.asleep_until = u64::MAX;
                return Ok(false);
            }
        };
        let cmd = match op {
            MemoryOp::DecreaseReservation => XENMEM_DECREASE_RESERVATION,
            _ => XENMEM_POPULATE_PHYSMAP,
        };
        let nr = list.len() as u64;
        let rc = host
            .hypercall(
                id,
                Hypercall::MemoryOp {
                    cmd: u64::from(cmd),
                    arg: MemoryArg::Reservation(Reservation {
                        extents: Some(&mut list),
                        nr_extents: nr,
                        extent_order: 0,
                        mem_flags: 0,
                        domid: DomId::SELF,
                    }),
                },
            )
            .rc;
        self.stats.hypercalls += 1;
        let moved = u64::try_from(rc.max(0)).unwrap_or(0);
        if cmd == XENMEM_DECREASE_RESERVATION {
            if moved != nr {
                // An honest guest's own free pages must always go back.
                return Err(Violation::DomainPages {
                    domid: id,
                    books: nr,
                    frames: moved,
                });
            }
            self.stats.ballooned_out += moved;
        } else {
            self.stats.ballooned_in += moved;
        }
        match self.driver.complete(rc, &mut self.kernel) {
            Ok(hvmem_balloon_proto::xen::driver::Next::Sleep { seconds }) => {
                self.asleep_until = now + u64::from(seconds.max(1));
                Ok(false)
            }
            Ok(hvmem_balloon_proto::xen::driver::Next::Now) => Ok(true),
            _ => {
                self.asleep_until = u64::MAX;
                Ok(false)
            }
        }
    }

    /// Checks that every page the guest wrote still holds what it wrote.
    /// With `sample`, only that many pages (chosen at random); otherwise
    /// all of them.
    ///
    /// # Errors
    ///
    /// [`Violation::GuestData`] naming the first changed frame.
    pub fn check_data(&mut self, host: &Host<'_>, sample: Option<usize>) -> Result<(), Violation> {
        let all = self.data.len() + self.processes.iter().map(|p| p.pages.len()).sum::<usize>();
        let n = sample.map_or(all, |s| s.min(all));
        for k in 0..n {
            let i = if sample.is_some() {
                self.check_rng.below(all as u64) as usize
            } else {
                k
            };
            let (gfn, fp) = match self.data.get(i) {
                Some(&(g, f, _)) => (g, f),
                None => {
                    let mut rest = i - self.data.len();
                    let mut found = None;
                    for p in &self.processes {
                        if rest < p.pages.len() {
                            found = p.pages.get(rest).copied();
                            break;
                        }
                        rest -= p.pages.len();
                    }
                    match found {
                        Some(x) => x,
                        None => continue,
                    }
                }
            };
            let mfn = Self::mfn(host, self.id, gfn)?;
            if host.memory().fingerprint(mfn) != Some(fp) {
                return Err(Violation::GuestData { mfn });
            }
        }
        Ok(())
    }
}

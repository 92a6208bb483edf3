//! Honest guests: seeded workloads in PV guests with a Xen balloon driver.
//!
//! Each guest is a small model of a Linux PV guest:
//!
//! - **Kernel free pages** ([`GuestPages`] for the balloon driver): frames
//!   the guest holds and does not use. The driver balloons out only these,
//!   and never below a kernel reserve ("don't try hard").
//! - **A working set** that grows and shrinks in phases. Resident pages hold
//!   data (a fingerprint the guest remembers and the checker verifies); a
//!   working set larger than what the guest holds means page faults that
//!   go to the swap disk (the miss rate).
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
    /// Accesses to non-resident pages (page faults served from swap).
    pub misses: u64,
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

/// An honest guest.
#[derive(Debug)]
pub struct Guest {
    id: DomId,
    max_pages: u64,
    driver: BalloonDriver<Vec<u64>>,
    kernel: Kernel,
    data: Vec<(Gfn, u64)>,
    processes: Vec<Process>,
    ws: u64,
    phase_ends: u64,
    asleep_until: u64,
    version: u64,
    rng: Rng,
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
            processes: Vec::new(),
            ws: 0,
            phase_ends: 0,
            asleep_until: 0,
            version: 0,
            rng: Rng::new(mix(seed) ^ mix(u64::from(id.get()).wrapping_add(0x5eed))),
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
        self.ws + self.process_pages() + self.kernel.reserve as u64
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
        self.phase(now);
        self.fit_working_set(host)?;
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

    /// Faults pages in while the working set is larger than what is
    /// resident and free pages exist; frees pages the working set left.
    fn fit_working_set(&mut self, host: &mut Host<'_>) -> Result<(), Violation> {
        while self.data.len() as u64 > self.ws {
            if let Some((gfn, _)) = self.data.pop() {
                self.kernel.free.push(gfn);
            }
        }
        let mut budget = self.workload.fault_in_per_sec;
        while (self.data.len() as u64) < self.ws && budget > 0 {
            if self.kernel.free.len() <= self.kernel.reserve {
                break;
            }
            let Some(gfn) = self.kernel.free.pop() else {
                break;
            };
            let fp = self.store(host, gfn)?;
            self.data.push((gfn, fp));
            budget -= 1;
        }
        Ok(())
    }

    fn access(&mut self, host: &mut Host<'_>) -> Result<(), Violation> {
        if self.ws == 0 {
            return Ok(());
        }
        for _ in 0..self.workload.accesses_per_sec {
            let page = self.rng.below(self.ws);
            self.stats.accesses += 1;
            let Some(&(gfn, _)) = self.data.get(usize::try_from(page).unwrap_or(usize::MAX)) else {
                self.stats.misses += 1;
                continue;
            };
            // One access in eight writes the page.
            if self.rng.chance(125) {
                let fp = self.store(host, gfn)?;
                if let Some(slot) = self.data.get_mut(page as usize) {
                    slot.1 = fp;
                }
            }
        }
        Ok(())
    }

    fn churn(&mut self, host: &mut Host<'_>) -> Result<(), Violation> {
        let w = self.workload;
        if self.processes.len() < w.max_processes && self.rng.chance(w.spawn_per_mille) {
            self.spawn(host)?;
        }
        if !self.processes.is_empty() && self.rng.chance(w.exit_per_mille) {
            let i = self.rng.below(self.processes.len() as u64) as usize;
            self.exit(host, i)?;
        }
        if !self.processes.is_empty() {
            let i = self.rng.below(self.processes.len() as u64) as usize;
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
        let data_pages = 1 + self.rng.below(8) as usize;
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
        let k = self.rng.below(p.pages.len() as u64) as usize;
        let l1 = Self::mfn(host, id, p.tables[3])?;
        let page = Self::mfn(host, id, p.pages.get(k).map_or(Gfn::new(u64::MAX), |x| x.0))?;
        let rw = if self.rng.chance(500) { RW } else { 0 };
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
                self.rng.below(all as u64) as usize
            } else {
                k
            };
            let (gfn, fp) = match self.data.get(i) {
                Some(&x) => x,
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

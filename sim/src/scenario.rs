//! Scenarios: a host, guests overcommitting it, a memory policy, and the
//! figures of a run.
//!
//! A run boots a host, builds the guests (each admitted on a claim for its
//! equal share of guest memory, with a physmap of `overcommit` times that
//! share), then advances one simulated second at a time: every guest runs
//! its workload and its balloon driver, the policy acts, and the invariant
//! checker runs (counters every second, a full audit every
//! `audit_every` seconds and at the end, honest guests' data sampled every
//! second and fully at each audit).

use std::time::Instant;

use hvmem_balloon_proto::xen::selfballoon::{MemInfo, SelfBalloon, SelfBalloonConfig};
use hvmem_balloon_proto::xen::toolstack::{DomainBounds, Mode, Toolstack};
use hvmem_types::DomId;

use crate::guest::{Guest, GuestStats, Workload};
use crate::host::{Domain, Host, HostConfig, HostStorage, MAX_DOMAINS};
use crate::invariants::Violation;

/// How memory is shared among the guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Each guest keeps its boot share; no ballooning.
    Static,
    /// The toolstack (reactive DMC) sets balloon targets from demand.
    Toolstack,
    /// Toolstack ballooning, with cleancache and frontswap over tmem.
    ToolstackTmem,
    /// Each guest selfballoons to its committed memory.
    SelfBalloon,
    /// Selfballooning, with cleancache and frontswap over tmem.
    SelfBalloonTmem,
}

impl Policy {
    /// Every policy, in report order.
    pub const ALL: [Self; 5] = [
        Self::Static,
        Self::Toolstack,
        Self::ToolstackTmem,
        Self::SelfBalloon,
        Self::SelfBalloonTmem,
    ];

    /// The report's name for it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Static => "static allocation",
            Self::Toolstack => "toolstack ballooning",
            Self::ToolstackTmem => "ballooning + tmem",
            Self::SelfBalloon => "selfballooning",
            Self::SelfBalloonTmem => "selfballooning + tmem",
        }
    }

    /// Why the policy cannot run yet, if it cannot (every policy runs now).
    #[must_use]
    pub const fn unavailable(self) -> Option<&'static str> {
        None
    }

    /// Whether guests use tmem (cleancache and frontswap) under it.
    #[must_use]
    pub const fn uses_tmem(self) -> bool {
        matches!(self, Self::ToolstackTmem | Self::SelfBalloonTmem)
    }
}

/// The workload every guest of a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Working sets in phases, moderate page-table churn.
    Consolidation,
    /// Short phases and heavy page-table churn.
    Churn,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Self; 2] = [Self::Consolidation, Self::Churn];

    /// The name on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Consolidation => "consolidation",
            Self::Churn => "churn",
        }
    }

    fn workload(self) -> Workload {
        match self {
            Self::Consolidation => Workload::consolidation(),
            Self::Churn => Workload::churn(),
        }
    }
}

/// Everything a run depends on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Host memory, MiB.
    pub host_mib: u64,
    /// Guests.
    pub guests: u16,
    /// Σ guests' maxima / guest memory.
    pub overcommit: f64,
    /// The seed of every workload.
    pub seed: u64,
    /// The workload.
    pub scenario: Scenario,
    /// Simulated seconds.
    pub steps: u64,
    /// Seconds between full audits.
    pub audit_every: u64,
    /// Seconds between timeline samples.
    pub sample_every: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host_mib: 4096,
            guests: 8,
            overcommit: 1.5,
            seed: 1,
            scenario: Scenario::Consolidation,
            steps: 2400,
            audit_every: 200,
            sample_every: 10,
        }
    }
}

/// Why a configuration cannot run.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value out of range, with what is allowed.
    Range(&'static str),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Range(what) => f.write_str(what),
        }
    }
}
impl std::error::Error for ConfigError {}

impl Config {
    /// Checks the ranges the sim supports.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Range`] naming the value and its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(16..=65536).contains(&self.host_mib) {
            return Err(ConfigError::Range("--host-mib must be 16..=65536"));
        }
        // One books slot is tmem's accounting entry.
        if self.guests == 0 || usize::from(self.guests) >= MAX_DOMAINS - 1 {
            return Err(ConfigError::Range("--guests must be 1..=62"));
        }
        if !(self.overcommit >= 1.0 && self.overcommit <= 8.0) {
            return Err(ConfigError::Range("--overcommit must be 1.0..=8.0"));
        }
        if self.steps == 0 || self.steps > 10_000_000 {
            return Err(ConfigError::Range("--steps must be 1..=10000000"));
        }
        if self.audit_every == 0 || self.sample_every == 0 {
            return Err(ConfigError::Range("audit and sample intervals must be > 0"));
        }
        let share = HostConfig::with_mib(self.host_mib).frames / u64::from(self.guests);
        if share < 512 {
            return Err(ConfigError::Range(
                "each guest needs at least 2 MiB: more --host-mib or fewer --guests",
            ));
        }
        Ok(())
    }
}

/// Memory per domain at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Simulated second.
    pub second: u64,
    /// Frames each guest owns (its `tot_pages` less its persistent tmem
    /// pages, which are tmem frames), in guest order.
    pub pages: Vec<u64>,
    /// Free pages of the host.
    pub free: u64,
    /// Frames lent to tmem.
    pub tmem: u64,
}

/// The figures of one policy's run.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyReport {
    /// The policy.
    pub policy: Policy,
    /// Frames available to guests.
    pub guest_frames: u64,
    /// Mean share of guest memory holding working-set data, per mille.
    pub utilization_per_mille: u64,
    /// Mean share of guest memory held by the guests (not free, not tmem's),
    /// per mille.
    pub allocated_per_mille: u64,
    /// Summed guest figures.
    pub stats: GuestStats,
    /// Anonymous pages swapped out to frontswap instead of the swap disk.
    pub swap_avoided: u64,
    /// tmem gets that found their page (frontswap loads, cleancache gets).
    pub tmem_hits: u64,
    /// tmem gets.
    pub tmem_gets: u64,
    /// Pages verified in persistent tmem pools at the audits.
    pub tmem_checks: u64,
    /// Split-driver I/O through grants.
    pub io: crate::splitio::IoStats,
    /// Counter checks run (one per second).
    pub counter_checks: u64,
    /// Full audits run.
    pub audits: u64,
    /// Guest pages whose data was checked.
    pub data_checks: u64,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
    /// Memory over time.
    pub timeline: Vec<Sample>,
    /// Per-guest pages at the end, with the host's free and own frames:
    /// these add up to the host's frames.
    pub final_pages: Vec<u64>,
    /// Free frames at the end.
    pub final_free: u64,
    /// Frames lent to tmem at the end.
    pub final_tmem: u64,
    /// The hypervisor's own frames.
    pub host_frames: u64,
    /// All frames.
    pub total_frames: u64,
}

impl PolicyReport {
    /// Guest page faults that missed, per mille of accesses.
    #[must_use]
    pub fn miss_per_mille(&self) -> u64 {
        (self.stats.misses * 1000)
            .checked_div(self.stats.accesses)
            .unwrap_or(0)
    }

    /// tmem gets that hit, per mille (`None` without tmem gets).
    #[must_use]
    pub fn tmem_hit_per_mille(&self) -> Option<u64> {
        (self.tmem_hits * 1000).checked_div(self.tmem_gets)
    }

    /// Hypercalls per wall-clock second.
    #[must_use]
    pub fn hypercalls_per_sec(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.stats.hypercalls as f64 / self.wall_secs
        } else {
            0.0
        }
    }
}

/// Guest ids start here (domain 0 is the control domain).
const FIRST_GUEST: u16 = 1;

/// Runs `policy` under `config`, calling `progress(second)` once a second.
///
/// # Errors
///
/// The first [`Violation`] of an invariant.
///
/// # Panics
///
/// If `config` does not [validate](Config::validate) or `policy` is
/// [unavailable](Policy::unavailable).
pub fn run(
    config: &Config,
    policy: Policy,
    progress: &mut dyn FnMut(u64),
) -> Result<PolicyReport, Violation> {
    assert!(config.validate().is_ok() && policy.unavailable().is_none());
    let started = Instant::now();
    let mut storage = HostStorage::new(HostConfig::with_mib(config.host_mib));
    #[allow(clippy::expect_used)]
    let mut host = Host::boot(&mut storage).expect("validated size");
    let n = u64::from(config.guests);
    let share = host.guest_frames() / n;
    let max_pages = ((share as f64) * config.overcommit) as u64;
    let workload = config.scenario.workload();
    let mut guests = Vec::new();
    let mut toolstack: Toolstack<MAX_DOMAINS> = Toolstack::new(Mode::Reactive, share / 8);
    let mut selfballoons = Vec::new();
    for i in 0..config.guests {
        let id = DomId::new(FIRST_GUEST + i);
        // Every guest has the same physmap and workload under every
        // policy; static allocation caps what it may hold at its share.
        host.create_domain(id, max_pages, share)
            .map_err(|_| Violation::FramesNotConserved)?;
        if policy == Policy::Static {
            host.set_max_pages(id, share);
        }
        let mut guest = Guest::new(id, max_pages, share, workload, config.seed);
        if policy.uses_tmem() {
            guest.enable_tmem(&mut host)?;
        }
        let _ = toolstack.add_domain(DomainBounds {
            domid: id,
            dynamic_min: guest.reserve() * 4,
            dynamic_max: max_pages,
        });
        #[allow(clippy::expect_used)]
        selfballoons.push(SelfBalloon::new(SelfBalloonConfig::linux()).expect("linux defaults"));
        guests.push(guest);
    }
    let mut io = crate::splitio::SplitIo::new(&mut host, &mut guests)?;
    let mut report = PolicyReport {
        policy,
        guest_frames: host.guest_frames(),
        utilization_per_mille: 0,
        allocated_per_mille: 0,
        stats: GuestStats::default(),
        swap_avoided: 0,
        tmem_hits: 0,
        tmem_gets: 0,
        tmem_checks: 0,
        io: crate::splitio::IoStats::default(),
        counter_checks: 0,
        audits: 0,
        data_checks: 0,
        wall_secs: 0.0,
        timeline: Vec::new(),
        final_pages: Vec::new(),
        final_free: 0,
        final_tmem: 0,
        host_frames: host.host_frames(),
        total_frames: host.total_frames(),
    };
    let (mut used_sum, mut held_sum) = (0u128, 0u128);
    for now in 0..config.steps {
        for g in &mut guests {
            g.step(&mut host, now)?;
        }
        if let Some(io) = io.as_mut() {
            io.step(&mut host)?;
        }
        act(
            policy,
            now,
            &host,
            &mut guests,
            &mut toolstack,
            &mut selfballoons,
        );
        host.check_counters()?;
        report.counter_checks += 1;
        for g in &mut guests {
            g.check_data(&host, Some(8))?;
            report.data_checks += 8;
        }
        if (now + 1) % config.audit_every == 0 || now + 1 == config.steps {
            host.audit()?;
            for g in &mut guests {
                g.check_data(&host, None)?;
                report.data_checks += g.resident();
                report.tmem_checks += g.check_tmem(&mut host)?;
            }
            report.audits += 1;
        }
        used_sum += u128::from(guests.iter().map(Guest::resident).sum::<u64>());
        // What the guests hold: neither free memory nor tmem's frames
        // (their persistent tmem pages count in their tot_pages, not here).
        held_sum += u128::from(
            guests
                .iter()
                .map(|g| host.domain(g.id()).map_or(0, Domain::owned))
                .sum::<u64>(),
        );
        if now % config.sample_every == 0 || now + 1 == config.steps {
            report.timeline.push(sample(&host, &guests, now));
        }
        progress(now);
    }
    let denom = u128::from(config.steps) * u128::from(host.guest_frames().max(1));
    report.utilization_per_mille = u64::try_from(used_sum * 1000 / denom).unwrap_or(0);
    report.allocated_per_mille = u64::try_from(held_sum * 1000 / denom).unwrap_or(0);
    for g in &guests {
        let s = g.stats;
        let t = &mut report.stats;
        t.accesses += s.accesses;
        t.misses += s.misses;
        t.ballooned_in += s.ballooned_in;
        t.ballooned_out += s.ballooned_out;
        t.hypercalls += s.hypercalls;
        t.processes += s.processes;
        t.disk_reads += s.disk_reads;
        t.swap_disk_writes += s.swap_disk_writes;
        t.swap_avoided += s.swap_avoided;
        t.tmem_gets += s.tmem_gets;
        t.tmem_hits += s.tmem_hits;
    }
    if let Some(io) = &io {
        report.io = io.stats;
        report.stats.hypercalls += io.stats.hypercalls;
    }
    report.swap_avoided = report.stats.swap_avoided;
    report.tmem_hits = report.stats.tmem_hits;
    report.tmem_gets = report.stats.tmem_gets;
    report.final_pages = sample(&host, &guests, config.steps).pages;
    report.final_free = host.free_frames();
    report.final_tmem = host.tmem_frames();
    report.host_frames = host.host_frames();
    report.wall_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

fn sample(host: &Host<'_>, guests: &[Guest], second: u64) -> Sample {
    Sample {
        second,
        pages: guests
            .iter()
            .map(|g| host.domain(g.id()).map_or(0, Domain::owned))
            .collect(),
        free: host.free_frames(),
        tmem: host.tmem_frames(),
    }
}

/// What the policy does this second: the toolstack rebalances every five
/// seconds; selfballooning guests tick every five seconds.
fn act(
    policy: Policy,
    now: u64,
    host: &Host<'_>,
    guests: &mut [Guest],
    toolstack: &mut Toolstack<MAX_DOMAINS>,
    selfballoons: &mut [SelfBalloon],
) {
    if now % 2 != 0 {
        return;
    }
    match policy {
        Policy::Toolstack | Policy::ToolstackTmem => {
            for g in guests.iter() {
                let _ = toolstack.observe(g.id(), g.committed());
            }
            if let Ok(plan) = toolstack.rebalance(host.books()) {
                for g in guests.iter_mut() {
                    if let Some(t) = plan.target(g.id()) {
                        g.set_target_pages(t);
                    }
                }
            }
        }
        Policy::SelfBalloon | Policy::SelfBalloonTmem => {
            for (g, s) in guests.iter_mut().zip(selfballoons.iter_mut()) {
                let current = g.driver().current_pages();
                let info = MemInfo {
                    committed: g.committed(),
                    reserve: g.reserve(),
                    totalram: current,
                    max_pfn: g.max_pages(),
                    frontswap: g.frontswap_pages(),
                    balloon_current: current,
                };
                if let Ok(action) = s.tick(&info) {
                    g.set_target_pages(action.target_pages);
                }
            }
        }
        _ => {}
    }
}

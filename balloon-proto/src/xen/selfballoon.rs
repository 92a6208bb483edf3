//! Selfballooning: the guest sets its own balloon target from its committed
//! memory (Linux `drivers/xen/xen-selfballoon.c`, removed with tmem in 2019).
//!
//! # Protocol
//!
//! Every `interval` seconds (5 by default) the embedder reads the guest's
//! memory figures into a [`MemInfo`] and calls [`SelfBalloon::tick`]:
//!
//! - **Goal** = `Committed_AS + totalreserve_pages`, plus the pages in
//!   frontswap when self-shrinking is on (room for them to come back).
//! - **Hysteresis.** Above the goal, the target moves down by
//!   `(cur - goal) / down_hysteresis` (default 8); below it, up by
//!   `(goal - cur) / up_hysteresis` (default 1).
//! - **Floor.** With `min_usable_mb` set, `reserve + min_usable_mb`;
//!   otherwise a piecewise-linear floor of `useful = max_pfn - reserve`:
//!   below 16 MiB never balloon; below 64 MiB `reserve + 16 MiB + (useful -
//!   16 MiB) / 2`; below 512 MiB `reserve + 40 MiB + (useful - 40 MiB) / 8`;
//!   else `reserve + 99 MiB + (useful - 99 MiB) / 32`.
//! - **Output** to the balloon driver: `target + balloon current_pages -
//!   totalram_pages` (the balloon counts pages the kernel does not).
//! - **Frontswap self-shrink.** If frontswap holds no page or grew, an
//!   inertia counter resets to 3; otherwise it counts down and at 0
//!   frontswap is shrunk to `cur - cur / 20` (0 if `cur <= 20`).
//!
//! Idle memory (page cache beyond the commitment) thus goes back to the
//! host a step at a time, and what the guest evicts lands in tmem.

use core::fmt;

/// Pages in `mb` MiB of 4 KiB pages.
const fn mb_to_pages(mb: u64) -> u64 {
    mb.saturating_mul(256)
}

/// The tunables, with Linux's defaults from [`SelfBalloonConfig::linux`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SelfBalloonConfig {
    /// Divisor of a step down.
    pub down_hysteresis: u64,
    /// Divisor of a step up.
    pub up_hysteresis: u64,
    /// A fixed floor of usable memory, MiB; 0 uses the piecewise floor.
    pub min_usable_mb: u64,
    /// Seconds between ticks.
    pub interval: u32,
    /// Whether frontswap self-shrinking runs.
    pub frontswap_selfshrinking: bool,
    /// Ticks without frontswap growth before a shrink.
    pub frontswap_inertia: u32,
    /// Divisor of a frontswap shrink.
    pub frontswap_hysteresis: u64,
}

impl SelfBalloonConfig {
    /// Linux's defaults.
    #[must_use]
    pub const fn linux() -> Self {
        Self {
            down_hysteresis: 8,
            up_hysteresis: 1,
            min_usable_mb: 0,
            interval: 5,
            frontswap_selfshrinking: true,
            frontswap_inertia: 3,
            frontswap_hysteresis: 20,
        }
    }
}

/// The guest's memory figures at one tick, in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemInfo {
    /// `Committed_AS`.
    pub committed: u64,
    /// `totalreserve_pages`.
    pub reserve: u64,
    /// `totalram_pages`: what the kernel manages now.
    pub totalram: u64,
    /// `max_pfn`: the guest's highest frame.
    pub max_pfn: u64,
    /// Pages in frontswap.
    pub frontswap: u64,
    /// The balloon driver's `current_pages`.
    pub balloon_current: u64,
}

/// What to do after a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub struct SelfBalloonAction {
    /// The new balloon target, pages (for the driver's `balloon_set_new_target`).
    ///
    /// [`BalloonDriver::set_target_kib`](crate::xen::driver::BalloonDriver::set_target_kib)
    /// takes KiB: pass `pages_to_kib(target_pages)` (from
    /// [`abi`](crate::xen::abi); 4 KiB per page). That method is the
    /// xenstore path: for a translated guest it also subtracts the hidden
    /// memory (`target_diff`), which Linux's selfballooning does not, so add
    /// those pages to the target first.
    pub target_pages: u64,
    /// Shrink frontswap to this many pages.
    pub frontswap_shrink_to: Option<u64>,
    /// Seconds to the next tick.
    pub next_tick: u32,
}

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelfBalloonConfigError {
    /// A hysteresis divisor is 0.
    ZeroHysteresis,
}

impl fmt::Display for SelfBalloonConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroHysteresis => f.write_str("a hysteresis divisor is 0"),
        }
    }
}
impl core::error::Error for SelfBalloonConfigError {}

/// Why a tick was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TickError {
    /// The figures are inconsistent: the driver's output would be negative
    /// or overflow.
    Inconsistent,
}

impl fmt::Display for TickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inconsistent => f.write_str("inconsistent memory figures"),
        }
    }
}
impl core::error::Error for TickError {}

/// The selfballooning worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SelfBalloon {
    config: SelfBalloonConfig,
    inertia: u32,
    last_frontswap: u64,
}

impl SelfBalloon {
    /// A worker with `config`.
    ///
    /// # Errors
    ///
    /// [`SelfBalloonConfigError::ZeroHysteresis`].
    pub const fn new(config: SelfBalloonConfig) -> Result<Self, SelfBalloonConfigError> {
        if config.down_hysteresis == 0
            || config.up_hysteresis == 0
            || config.frontswap_hysteresis == 0
        {
            return Err(SelfBalloonConfigError::ZeroHysteresis);
        }
        Ok(Self {
            config,
            inertia: config.frontswap_inertia,
            last_frontswap: 0,
        })
    }

    /// The floor below which the target never goes.
    fn floor(&self, m: &MemInfo) -> u64 {
        if self.config.min_usable_mb != 0 {
            return m
                .reserve
                .saturating_add(mb_to_pages(self.config.min_usable_mb));
        }
        let useful = m.max_pfn.saturating_sub(m.reserve);
        let piece = |base_mb: u64, shift: u32| {
            m.reserve
                .saturating_add(mb_to_pages(base_mb))
                .saturating_add(useful.saturating_sub(mb_to_pages(base_mb)) >> shift)
        };
        if useful < mb_to_pages(16) {
            m.max_pfn
        } else if useful < mb_to_pages(64) {
            piece(16, 1)
        } else if useful < mb_to_pages(512) {
            piece(40, 3)
        } else {
            piece(99, 5)
        }
    }

    /// One tick of the worker.
    ///
    /// # Errors
    ///
    /// [`TickError::Inconsistent`] when `target + balloon_current -
    /// totalram` is negative or overflows; then nothing changes.
    pub fn tick(&mut self, m: &MemInfo) -> Result<SelfBalloonAction, TickError> {
        let c = self.config;
        let cur = m.totalram;
        let mut goal = m.committed.saturating_add(m.reserve);
        if c.frontswap_selfshrinking {
            goal = goal.saturating_add(m.frontswap);
        }
        let mut target = if cur > goal {
            cur - (cur - goal) / c.down_hysteresis
        } else {
            cur + (goal - cur) / c.up_hysteresis
        };
        target = target.max(self.floor(m));
        let out = target
            .checked_add(m.balloon_current)
            .and_then(|t| t.checked_sub(m.totalram))
            .ok_or(TickError::Inconsistent)?;
        let frontswap_shrink_to = if c.frontswap_selfshrinking {
            self.frontswap_selfshrink(m.frontswap)
        } else {
            None
        };
        Ok(SelfBalloonAction {
            target_pages: out,
            frontswap_shrink_to,
            next_tick: c.interval,
        })
    }

    fn frontswap_selfshrink(&mut self, cur: u64) -> Option<u64> {
        let last = self.last_frontswap;
        self.last_frontswap = cur;
        if cur == 0 || cur > last {
            self.inertia = self.config.frontswap_inertia;
            return None;
        }
        if self.inertia != 0 {
            self.inertia -= 1;
            if self.inertia != 0 {
                return None;
            }
        }
        self.inertia = self.config.frontswap_inertia;
        let h = self.config.frontswap_hysteresis;
        Some(if cur <= h { 0 } else { cur - cur / h })
    }
}

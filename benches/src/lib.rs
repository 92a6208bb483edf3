//! Shared setup for the hvmem criterion benches.
//!
//! - [`arena`]: the table arena and frame stack both page-table benches give
//!   hvmem-pagetable.
//! - [`rng`]: a tiny seeded xorshift generator, so that every bench replays the
//!   same "random" workload without a dependency.
//! - [`buddy`]: the frame heaps the `buddy` bench compares (`hvmem-buddy` and
//!   its peers on crates.io, each behind one small trait) and the workloads it
//!   runs on them.
//! - [`criterion()`]: the criterion settings every bench runs with.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "bench setup: a broken heap or workload must stop the bench loudly, not skew a number"
)]

pub mod arena;
pub mod buddy;
pub mod rng;

use std::time::Duration;

/// The criterion settings of every bench in this crate: 1 s of warm-up and
/// 3 s of measurement per function (criterion's defaults are 3 s and 5 s),
/// so that `cargo bench -p hvmem-benches` runs its hundred-odd functions in
/// well under 15 minutes on a 2-core machine. `--warm-up-time` and
/// `--measurement-time` on the command line still override them.
#[must_use]
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

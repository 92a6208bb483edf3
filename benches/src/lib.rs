//! Shared setup for the hvmem criterion benches.
//!
//! - [`rng`]: a tiny seeded xorshift generator, so that every bench replays the
//!   same "random" workload without a dependency.
//! - [`buddy`]: the frame heaps the `buddy` bench compares (`hvmem-buddy` and
//!   its peers on crates.io, each behind one small trait) and the workloads it
//!   runs on them.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "bench setup: a broken heap or workload must stop the bench loudly, not skew a number"
)]

pub mod buddy;
pub mod rng;

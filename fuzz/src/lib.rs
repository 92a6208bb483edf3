//! Fuzz targets for the hvmem crates.
//!
//! Each target is a module with `pub fn run(data: &[u8])`: it decodes the
//! bytes into a sequence of operations, applies them to the crate under test
//! and to a simple model, and panics when the two disagree or an invariant
//! breaks. The libFuzzer binaries in `fuzz_targets/` call these functions,
//! and `tests/corpus_replay.rs` replays each checked-in corpus through them as
//! an ordinary test, so every input that ever found a bug stays a regression
//! test on stable Rust.
#![forbid(unsafe_code)]
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod balloon;
pub mod buddy;
mod bytes;
pub mod frametable;
pub mod grant;
pub mod host;
pub mod pagetable_ops;
pub mod pagetable_walk;
pub mod pv_mmu_update;
pub mod tmem;

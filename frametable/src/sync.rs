//! The atomics the frame table is built on: `core`'s, or loom's when the crate
//! is compiled with `--cfg loom` so the model checker can explore every
//! interleaving of the CAS loops.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

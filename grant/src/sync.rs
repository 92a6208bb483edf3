//! The atomics the crate is built on: `core`'s, or loom's when the crate is
//! compiled with `--cfg loom`, so the model checker explores every
//! interleaving of the shared-entry protocol.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

/// One turn of a busy-wait loop: a CPU hint natively, a yield under loom (which
/// must see every spin loop give way to the other threads).
#[inline]
pub(crate) fn spin_wait() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

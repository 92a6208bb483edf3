//! Xen ballooning: the guest driver, the hypervisor's books, the toolstack
//! policy and selfballooning.
//!
//! The pieces meet as in a real host: the toolstack's [`toolstack::Plan`]
//! becomes `memory/target` in xenstore (KiB, [`abi::pages_to_kib`]); the
//! guest's [`driver::BalloonDriver`] turns the target into
//! `XENMEM_populate_physmap` and `XENMEM_decrease_reservation` batches; the
//! hypervisor's [`domain::HostMemory`] answers them against `max_pages`,
//! free memory and claims.

pub mod abi;
pub mod domain;
pub mod driver;
pub mod selfballoon;
pub mod toolstack;

#[cfg(test)]
mod tests;

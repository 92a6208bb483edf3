//! A whole simulated host built from the hvmem crates.
//!
//! work in progress
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod abi;
pub mod attack;
pub mod guest;
pub mod host;
pub mod hypercall;
pub mod invariants;
pub mod memory;
pub mod report;
pub mod rng;
pub mod scenario;

#[cfg(test)]
mod tests;

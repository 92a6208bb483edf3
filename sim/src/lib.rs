//! A whole simulated host built from the hvmem crates.
//!
//! work in progress
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod abi;
pub mod host;
pub mod hypercall;
pub mod invariants;
pub mod memory;

#[cfg(test)]
mod tests;

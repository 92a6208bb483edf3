//! virtio-balloon (device ID 5): device and driver sides.

pub mod blocks;
pub mod config;
pub mod device;
pub mod driver;
pub mod features;
pub mod hint;
pub mod hinter;
pub mod reporter;
pub mod stats;

pub use features::{Features, Queue, QueueLayout};

#[cfg(test)]
pub(crate) mod tests;

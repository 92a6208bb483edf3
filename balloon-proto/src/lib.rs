//! Sans-I/O balloon state machines for Xen and virtio.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

mod bitmap;
pub mod virtio;
pub mod xen;

pub use bitmap::{StorageError, bitmap_words};

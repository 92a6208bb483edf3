//! Xen grant tables (work in progress: see issue 6).
#![no_std]

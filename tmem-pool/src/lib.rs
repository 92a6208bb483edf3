//! Transcendent memory pools (work in progress: see issue 8).
#![no_std]

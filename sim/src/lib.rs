//! A simulated host built from the hvmem crates (work in progress: issue 9).

//! The malicious-guest target: an 8 MiB host with two honest guests and an
//! attacker whose hypercalls come from the fuzzer's bytes.
//!
//! Each byte below 32 runs one second of the honest guests (their
//! workloads, page-table churn and balloon drivers); any other byte starts
//! a hostile hypercall decoded from the bytes that follow (`mmu_update`,
//! `mmuext_op`, every `memory_op`, `grant_table_op`, `tmem_op`, unknown
//! numbers, with frames drawn from the attacker's own, the whole host and
//! beyond), or, for `0xff`, the attacker's death (its domain destroyed with
//! whatever it built, every frame returned) and rebirth. After every call the host's counters and a sample of honest
//! data are checked, and the full audit runs (the host is small enough):
//! frame conservation, owners, reference and type counts against the live
//! page tables, physmaps, honest guests' data. Any violation panics.

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Err(violation) = hvmem_sim::attack::replay(data) {
        panic!("{violation}");
    }
}
